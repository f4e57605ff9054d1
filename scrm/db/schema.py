"""Every table: importing this module makes the ORM metadata whole.

Foreign keys cross the model modules (tickets.team_id -> desk_teams, inbox_teams -> desk_teams, ...),
so a flush or a create_all needs them all mapped. The model modules import only `models` (and the
secret column types); this module, imported by the Database, imports every one of them.
"""

from __future__ import annotations

from scrm.db import (  # noqa: F401 - imported for their tables
    models,
    models_access,
    models_campaigns,
    models_desk,
    models_desk_ui,
    models_events,
    models_mail,
    models_marketing,
    models_ui,
    models_wechat,
    models_wecom,
)
from scrm.db.models import Base

metadata = Base.metadata
