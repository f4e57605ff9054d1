"""service desk: teams, SLA, automation rules, outgoing webhooks, CSAT, ticket comments

Revision ID: 0005_desk
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_desk"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('desk_automation_rules',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('conditions', sa.JSON(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_automation_rules'))
    )
    op.create_index(op.f('ix_desk_automation_rules_event'), 'desk_automation_rules', ['event'], unique=False)
    op.create_table('desk_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_desk_settings'))
    )
    op.create_table('desk_webhooks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_webhooks'))
    )
    op.create_table('desk_automation_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('rule_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['desk_automation_rules.id'], name=op.f('fk_desk_automation_log_rule_id_desk_automation_rules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_automation_log')),
    sa.UniqueConstraint('rule_id', 'event_id', name=op.f('uq_desk_automation_log_rule_id'))
    )
    op.create_index('ix_desk_automation_log_conversation', 'desk_automation_log', ['conversation_id', 'id'], unique=False)
    op.create_table('desk_sla_policies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=True),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('first_response_minutes', sa.Integer(), nullable=True),
    sa.Column('next_response_minutes', sa.Integer(), nullable=True),
    sa.Column('resolution_minutes', sa.Integer(), nullable=True),
    sa.Column('warn_before_minutes', sa.Integer(), nullable=False),
    sa.Column('business_hours', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inboxes.id'], name=op.f('fk_desk_sla_policies_inbox_id_inboxes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_sla_policies'))
    )
    op.create_table('desk_teams',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('auto_assign', sa.Boolean(), nullable=False),
    sa.Column('max_open_per_agent', sa.Integer(), nullable=False),
    sa.Column('reassign_on_offline', sa.Boolean(), nullable=False),
    sa.Column('last_assigned_agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inboxes.id'], name=op.f('fk_desk_teams_inbox_id_inboxes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_teams')),
    sa.UniqueConstraint('name', name=op.f('uq_desk_teams_name'))
    )
    op.create_index(op.f('ix_desk_teams_inbox_id'), 'desk_teams', ['inbox_id'], unique=False)
    op.create_table('desk_webhook_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('webhook_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['webhook_id'], ['desk_webhooks.id'], name=op.f('fk_desk_webhook_deliveries_webhook_id_desk_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_webhook_deliveries')),
    sa.UniqueConstraint('webhook_id', 'event_id', name=op.f('uq_desk_webhook_deliveries_webhook_id'))
    )
    op.create_index('ix_desk_webhook_deliveries_hook', 'desk_webhook_deliveries', ['webhook_id', 'id'], unique=False)
    op.create_index('ix_desk_webhook_deliveries_ready', 'desk_webhook_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_table('desk_team_members',
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_desk_team_members_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['desk_teams.id'], name=op.f('fk_desk_team_members_team_id_desk_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', 'agent_id', name=op.f('pk_desk_team_members'))
    )
    op.create_index(op.f('ix_desk_team_members_agent_id'), 'desk_team_members', ['agent_id'], unique=False)
    op.create_table('desk_conversation_stats',
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('human_involved', sa.Boolean(), nullable=False),
    sa.Column('handoffs', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('sla_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_secs', sa.Float(), nullable=True),
    sa.Column('next_response_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_secs', sa.Float(), nullable=True),
    sa.Column('warned', sa.JSON(), nullable=False),
    sa.Column('breached', sa.JSON(), nullable=False),
    sa.Column('sla_met', sa.Boolean(), nullable=True),
    sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_desk_conversation_stats_conversation_id_conversations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('conversation_id', name=op.f('pk_desk_conversation_stats'))
    )
    op.create_index('ix_desk_stats_check', 'desk_conversation_stats', ['next_check_at'], unique=False)
    op.create_index('ix_desk_stats_created', 'desk_conversation_stats', ['created_at'], unique=False)
    op.create_index('ix_desk_stats_first_response', 'desk_conversation_stats', ['first_response_at'], unique=False)
    op.create_index('ix_desk_stats_resolved', 'desk_conversation_stats', ['resolved_at'], unique=False)
    op.create_table('desk_csat',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('team_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rating', sa.Integer(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('asked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_desk_csat_conversation_id_conversations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_csat'))
    )
    op.create_index('ix_desk_csat_asked', 'desk_csat', ['asked_at'], unique=False)
    op.create_index('ix_desk_csat_conversation', 'desk_csat', ['conversation_id', 'id'], unique=False)
    op.create_table('desk_ticket_comments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_desk_ticket_comments_agent_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_desk_ticket_comments_ticket_id_tickets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_ticket_comments'))
    )
    op.create_index('ix_desk_ticket_comments_ticket', 'desk_ticket_comments', ['ticket_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_desk_ticket_comments_ticket', table_name='desk_ticket_comments')
    op.drop_table('desk_ticket_comments')
    op.drop_index('ix_desk_csat_conversation', table_name='desk_csat')
    op.drop_index('ix_desk_csat_asked', table_name='desk_csat')
    op.drop_table('desk_csat')
    op.drop_index('ix_desk_stats_resolved', table_name='desk_conversation_stats')
    op.drop_index('ix_desk_stats_first_response', table_name='desk_conversation_stats')
    op.drop_index('ix_desk_stats_created', table_name='desk_conversation_stats')
    op.drop_index('ix_desk_stats_check', table_name='desk_conversation_stats')
    op.drop_table('desk_conversation_stats')
    op.drop_index(op.f('ix_desk_team_members_agent_id'), table_name='desk_team_members')
    op.drop_table('desk_team_members')
    op.drop_index('ix_desk_webhook_deliveries_ready', table_name='desk_webhook_deliveries')
    op.drop_index('ix_desk_webhook_deliveries_hook', table_name='desk_webhook_deliveries')
    op.drop_table('desk_webhook_deliveries')
    op.drop_index(op.f('ix_desk_teams_inbox_id'), table_name='desk_teams')
    op.drop_table('desk_teams')
    op.drop_table('desk_sla_policies')
    op.drop_index('ix_desk_automation_log_conversation', table_name='desk_automation_log')
    op.drop_table('desk_automation_log')
    op.drop_table('desk_webhooks')
    op.drop_table('desk_settings')
    op.drop_index(op.f('ix_desk_automation_rules_event'), table_name='desk_automation_rules')
    op.drop_table('desk_automation_rules')
