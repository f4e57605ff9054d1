"""PostgreSQL: `scrm_ingest_batch` also applies custom profile attributes (and first-touch `source`).

A new 微信客服 customer's first message carries the kf/customer/batchget profile (gender, unionid) as
custom attributes; the function did not take them, so every such sender went the Python path (about
ten statements a batch instead of one call). The function now merges `p_attributes` (a JSON object per
message, NULL for none) as ingest_rules.apply_profile does: keys replace, "source" is first-touch on
the identity and the contact. tests/core/test_ingest_pg.py checks both paths store and log the same.

Revision ID: i17b_ingest_attributes
Revises: i23_event_log
"""
from __future__ import annotations

import importlib

from alembic import op

revision = "i17b_ingest_attributes"
down_revision = "i23_event_log"
branch_labels = None
depends_on = None

OLD_SIGNATURE = ("bigint, boolean, timestamptz, text[], text[], text[], text[], text[], text[], text[], "
                 "timestamptz[], text[], text[], text[], text[], text[], text[], text[]")

FUNCTION = r"""
CREATE OR REPLACE FUNCTION scrm_ingest_batch(
    p_inbox bigint, p_new_on_resolved boolean, p_now timestamptz,
    p_external_ids text[], p_senders text[], p_texts text[], p_content_types text[], p_previews text[],
    p_attachments text[], p_payloads text[], p_sent_ats timestamptz[], p_subjects text[],
    p_names text[], p_emails text[], p_phones text[], p_languages text[], p_avatars text[], p_usernames text[],
    p_attributes text[])
RETURNS TABLE (idx integer, outcome text, message_id bigint, conversation_id bigint, contact_id bigint,
               handler text, previous_status text, contact_changed boolean, contact_created boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(p_external_ids, 1), 0);
    dup integer[] := '{}';
    -- Per message (by index): where it goes and what its storing changed.
    m_conv bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    m_contact bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    m_handler text[] := array_fill(NULL::text, ARRAY[n]);
    m_outcome text[] := array_fill(NULL::text, ARRAY[n]);
    m_previous text[] := array_fill(NULL::text, ARRAY[n]);
    m_changed boolean[] := array_fill(false, ARRAY[n]);
    m_created boolean[] := array_fill(false, ARRAY[n]);
    -- Per stored sender: the rows whose clocks move.
    k_contacts bigint[] := '{}';
    k_identities bigint[] := '{}';
    k_convs bigint[] := '{}';
    k_previews text[] := '{}';
    k_added integer[] := '{}';
    s record;
    ident record;
    c record;
    conv record;
    i integer;
    first boolean;
    v_new boolean;
    v_open_new boolean;
    v_conv bigint;
    v_handler text;
    v_outcome text;
    v_previous text;
    v_name text;
    v_email text;
    v_phone text;
    v_language text;
    v_avatar text;
    v_username text;
    v_changed boolean;
    v_any_change boolean;
    v_reachable boolean;
    v_attrs jsonb;
    v_given jsonb;
    v_merged jsonb;
    v_source text;
BEGIN
    -- Stored before (a platform's retry): one unique-index probe per message.
    FOR s IN
        SELECT x.i::integer AS i, f.id, f.conversation_id
        FROM unnest(p_external_ids) WITH ORDINALITY AS x(eid, i)
        CROSS JOIN LATERAL (SELECT m.id, m.conversation_id FROM messages m
                            WHERE m.inbox_id = p_inbox AND m.external_id = x.eid LIMIT 1) f
    LOOP
        dup := dup || s.i;
        RETURN QUERY SELECT s.i, 'duplicate'::text, s.id, s.conversation_id, NULL::bigint, NULL::text, NULL::text,
                            false, false;
    END LOOP;

    -- Each sender in turn, in code-point order (the lock order), with its messages in arrival order.
    FOR s IN
        SELECT x.sender, array_agg(x.i::integer ORDER BY x.i) AS idxs
        FROM unnest(p_senders) WITH ORDINALITY AS x(sender, i)
        WHERE x.i::integer <> ALL (dup)
        GROUP BY x.sender ORDER BY x.sender COLLATE "C"
    LOOP
        SELECT * INTO ident FROM contact_identities ci
        WHERE ci.inbox_id = p_inbox AND ci.external_id = s.sender FOR NO KEY UPDATE;
        v_new := NOT FOUND;
        IF v_new THEN
            v_name := NULL; v_email := NULL; v_phone := NULL; v_language := NULL; v_avatar := NULL;
            v_username := NULL; v_reachable := true; v_attrs := '{}'; v_source := NULL;
        ELSE
            SELECT * INTO c FROM contacts WHERE id = ident.contact_id;  -- after the lock: as last committed
            IF c.merged_into_id IS NOT NULL THEN  -- the Python path follows the merge
                RETURN QUERY SELECT j, 'slow'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text,
                                    false, false
                             FROM unnest(s.idxs) AS j;
                CONTINUE;
            END IF;
            v_name := c.name; v_email := c.email; v_phone := c.phone; v_language := c.language;
            v_avatar := c.avatar_url; v_username := ident.username; v_reachable := ident.reachable;
            v_attrs := coalesce(c.attributes::jsonb, '{}'); v_source := ident.source;
        END IF;

        -- The profile, message by message as ingest.apply_profile: names follow the channel, email
        -- and phone fill gaps only.
        v_any_change := false;
        FOREACH i IN ARRAY s.idxs LOOP
            v_changed := false;
            IF coalesce(p_names[i], '') <> '' AND v_name IS DISTINCT FROM p_names[i] THEN
                v_name := p_names[i]; v_changed := true;
            END IF;
            IF coalesce(p_languages[i], '') <> '' AND v_language IS DISTINCT FROM p_languages[i] THEN
                v_language := p_languages[i]; v_changed := true;
            END IF;
            IF coalesce(p_avatars[i], '') <> '' AND v_avatar IS DISTINCT FROM p_avatars[i] THEN
                v_avatar := p_avatars[i]; v_changed := true;
            END IF;
            IF coalesce(p_emails[i], '') <> '' AND coalesce(v_email, '') = '' THEN
                v_email := p_emails[i]; v_changed := true;
            END IF;
            IF coalesce(p_phones[i], '') <> '' AND coalesce(v_phone, '') = '' THEN
                v_phone := p_phones[i]; v_changed := true;
            END IF;
            IF coalesce(p_usernames[i], '') <> '' THEN
                v_username := p_usernames[i];
            END IF;
            -- Custom attributes merge in; "source" is first-touch: the identity's and the contact's own
            -- are kept once set (ingest_rules.apply_profile).
            IF p_attributes[i] IS NOT NULL THEN
                v_given := p_attributes[i]::jsonb;
                v_merged := v_attrs || (v_given - 'source');
                IF v_given ? 'source' THEN
                    IF coalesce(v_source, '') = '' THEN
                        v_source := v_given ->> 'source';
                    END IF;
                    IF NOT v_attrs ? 'source' THEN
                        v_merged := v_merged || jsonb_build_object('source', v_given -> 'source');
                    END IF;
                END IF;
                IF v_merged <> v_attrs THEN
                    v_attrs := v_merged; v_changed := true;
                END IF;
            END IF;
            IF p_content_types[i] <> 'event' THEN
                v_reachable := true;  -- they wrote to us again: the channel works
            END IF;
            v_any_change := v_any_change OR v_changed;
            m_changed[i] := v_changed;
        END LOOP;

        IF v_new THEN
            -- A new person: a contact (with its profile: one insert, no update of its indexed columns)
            -- and its identity. A concurrent batch creating the same identity makes this insert fail,
            -- and with it the whole call; it is then run again and finds it.
            INSERT INTO contacts (name, email, phone, language, avatar_url, first_seen_at, last_seen_at, attributes,
                                  opt_outs, created_at, updated_at)
            VALUES (v_name, v_email, v_phone, v_language, v_avatar, p_now, p_now, v_attrs::json, '{}', p_now, p_now)
            RETURNING * INTO c;
            INSERT INTO contact_identities (inbox_id, external_id, contact_id, username, reachable, subscribed,
                                            attributes, source, created_at)
            VALUES (p_inbox, s.sender, c.id, v_username, true, true, '{}', v_source, p_now)
            RETURNING * INTO ident;
        ELSE
            IF v_any_change THEN
                UPDATE contacts SET name = v_name, email = v_email, phone = v_phone, language = v_language,
                                    avatar_url = v_avatar, attributes = v_attrs::json
                WHERE id = c.id;
            END IF;
            IF v_username IS DISTINCT FROM ident.username OR v_reachable <> ident.reachable
               OR v_source IS DISTINCT FROM ident.source THEN
                UPDATE contact_identities SET username = v_username, reachable = v_reachable, source = v_source,
                    unreachable_reason = CASE WHEN v_reachable THEN NULL ELSE unreachable_reason END
                WHERE id = ident.id;
            END IF;
        END IF;

        -- The conversation: the latest one continues, unless resolved and the inbox opens a new one.
        -- (`conv` keeps one row type throughout: resetting it would make PL/pgSQL plan its uses again.)
        v_previous := NULL;
        v_open_new := true;
        IF NOT v_new THEN
            SELECT * INTO conv FROM conversations cv WHERE cv.identity_id = ident.id
            ORDER BY cv.last_activity_at DESC, cv.id DESC LIMIT 1;
            IF FOUND THEN
                v_open_new := conv.status = 'resolved' AND p_new_on_resolved;
            END IF;
        END IF;
        IF v_open_new THEN
            INSERT INTO conversations (inbox_id, contact_id, identity_id, status, handler, priority, subject,
                                       last_activity_at, created_at, unread_count, bot_state, meta)
            VALUES (p_inbox, c.id, ident.id, 'open', 'bot', 'normal', p_subjects[s.idxs[1]],
                    p_now, p_now, 0, '{}', '{}')
            RETURNING id INTO v_conv;
            v_handler := 'bot';
            v_outcome := 'created';
        ELSIF conv.status = 'resolved' THEN  -- reopened: the bot takes it again, afresh
            UPDATE conversations SET status = 'open', snoozed_until = NULL, resolved_at = NULL, handler = 'bot',
                                     bot_state = '{}', waiting_since = NULL
            WHERE id = conv.id;
            v_conv := conv.id;
            v_handler := 'bot';
            v_outcome := 'reopened';
        ELSE
            IF conv.status <> 'open' THEN  -- pending or snoozed: open again, same handler
                UPDATE conversations SET status = 'open', snoozed_until = NULL, resolved_at = NULL WHERE id = conv.id;
                v_previous := conv.status;
            END IF;
            v_conv := conv.id;
            v_handler := conv.handler;
            v_outcome := 'stored';
        END IF;

        first := true;
        FOREACH i IN ARRAY s.idxs LOOP
            m_conv[i] := v_conv;
            m_contact[i] := c.id;
            m_handler[i] := v_handler;
            m_outcome[i] := CASE WHEN first THEN v_outcome ELSE 'stored' END;
            m_previous[i] := CASE WHEN first THEN v_previous END;
            m_created[i] := first AND v_new;
            first := false;
        END LOOP;
        k_contacts := k_contacts || c.id;
        k_identities := k_identities || ident.id;
        k_convs := k_convs || v_conv;
        k_previews := k_previews || p_previews[s.idxs[array_upper(s.idxs, 1)]];
        k_added := k_added || array_length(s.idxs, 1);
    END LOOP;

    -- The clocks: contact seen, identity wrote in, conversation moved and waiting for an answer.
    UPDATE contacts SET last_seen_at = p_now, updated_at = p_now WHERE id = ANY (k_contacts);
    UPDATE contact_identities SET last_inbound_at = p_now WHERE id = ANY (k_identities);
    UPDATE conversations cv
    SET last_activity_at = p_now, last_message_preview = v.preview, unread_count = cv.unread_count + v.added,
        waiting_since = coalesce(cv.waiting_since, p_now)
    FROM unnest(k_convs, k_previews, k_added) AS v(id, preview, added)
    WHERE cv.id = v.id;

    -- The messages, in arrival order (their ids too).
    RETURN QUERY
    WITH stored AS (
        INSERT INTO messages (conversation_id, inbox_id, direction, sender_kind, content_type, text, attachments,
                              external_id, payload, created_at, sent_at, edit_history, private)
        SELECT m_conv[x.i], p_inbox, 'in', 'contact', p_content_types[x.i], p_texts[x.i], p_attachments[x.i]::json,
               p_external_ids[x.i], p_payloads[x.i]::json, p_now, p_sent_ats[x.i], '[]', false
        FROM generate_series(1, n) AS x(i)
        WHERE m_conv[x.i] IS NOT NULL
        ORDER BY x.i
        RETURNING messages.id, messages.external_id
    )
    SELECT x.i::integer, m_outcome[x.i], st.id, m_conv[x.i], m_contact[x.i], m_handler[x.i], m_previous[x.i],
           m_changed[x.i], m_created[x.i]
    FROM unnest(p_external_ids) WITH ORDINALITY AS x(eid, i)
    JOIN stored st ON st.external_id = x.eid;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS scrm_ingest_batch({OLD_SIGNATURE})")
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS scrm_ingest_batch({OLD_SIGNATURE}, text[])")
        op.execute(importlib.import_module("scrm.db.migrations.versions.0013_ingest_batch_function").FUNCTION)
