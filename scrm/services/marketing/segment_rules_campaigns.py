"""Segment conditions on campaigns and churn risk (compiled into the segment's one SQL query).

- campaign: touched | not_touched | first_touch | last_touch (value: campaign id or list of ids)
- churn_risk: at_risk | not_at_risk (no value), or gt | lt | between on the 0-100 score
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists, not_

from scrm.db.models import Contact
from scrm.db.models_campaigns import CampaignTouch, ChurnScore, ContactAttribution

FIELDS = ("campaign", "churn_risk")
CAMPAIGN_OPS = ("touched", "not_touched", "first_touch", "last_touch")
CHURN_OPS = ("at_risk", "not_at_risk", "gt", "lt", "between")


def condition(field: str, op: Any, value: Any, where: str, error: type[ValueError]) -> ColumnElement[bool]:
    """The SQL condition on Contact for one campaign / churn_risk rule; raises `error` on bad input."""
    if field == "campaign":
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise error(f"{where}: value must be a campaign id or a list of campaign ids")
        if op in ("touched", "not_touched"):
            found = exists().where(CampaignTouch.contact_id == Contact.id, CampaignTouch.campaign_id.in_(values))
            return found if op == "touched" else not_(found)
        if op in ("first_touch", "last_touch"):
            col = ContactAttribution.first_campaign_id if op == "first_touch" else ContactAttribution.last_campaign_id
            return exists().where(ContactAttribution.contact_id == Contact.id, col.in_(values))
        raise error(f"{where}: operator must be one of {', '.join(CAMPAIGN_OPS)}")
    # churn_risk
    if op in ("at_risk", "not_at_risk"):
        found = exists().where(ChurnScore.contact_id == Contact.id, ChurnScore.at_risk.is_(True))
        return found if op == "at_risk" else not_(found)
    numbers = value if op == "between" else [value]
    if op not in ("gt", "lt", "between") or not isinstance(numbers, list) or len(numbers) != (2 if op == "between" else 1):
        raise error(f"{where}: operator must be one of {', '.join(CHURN_OPS)} (between takes [low, high])")
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n <= 100 for n in numbers):
        raise error(f"{where}: the churn-risk score is a number from 0 to 100")
    score = ChurnScore.score
    cond = {"gt": lambda: score > numbers[0], "lt": lambda: score < numbers[0],
            "between": lambda: score.between(numbers[0], numbers[1])}[op]()
    return exists().where(ChurnScore.contact_id == Contact.id, cond)
