"""The public rating page behind an email's CSAT link: /csat/{token}.

No login and no CSRF token: the signed, one-use, expiring token in the path is the credential (a
forged POST can at most rate a survey whose link the attacker already holds). GET only shows the
form, so mail scanners that open links never record a rating. Server-rendered, no script; every
text from the database is escaped.
"""

from __future__ import annotations

import html

from aiohttp import web

from scrm.services.desk import csat, csat_link
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX

_HEAD = ("<!doctype html><html lang='zh-CN'><meta charset='utf-8'>"
         "<meta name='viewport' content='width=device-width, initial-scale=1'>"
         "<meta name='referrer' content='no-referrer'><meta name='robots' content='noindex'>"
         "<title>服务评价 · Rate our service</title>"
         "<style>body{font:16px/1.5 system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;color:#1f2933;"
         "max-width:34em;margin:2em auto;padding:0 16px}h1{font-size:20px}"
         ".ratings{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}"
         ".ratings button{flex:1 1 9em;font:inherit;padding:10px;border:1px solid #cbd5e1;border-radius:6px;"
         "background:#fff;cursor:pointer}.ratings button:hover{border-color:#2563eb;background:#eff6ff}"
         "textarea{width:100%;box-sizing:border-box;font:inherit;min-height:5em}"
         ".muted{color:#64748b;font-size:14px}.error{color:#b91c1c}</style><body>")
_ASK = "您对本次服务满意吗？请选择 1-5 分（5 分最满意）。<br>How satisfied were you with our service? Choose 1 (poor) to 5 (excellent)."


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=_HEAD + body + "</body></html>", status=status, content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


def _form(action: str, error: str | None = None, comment: str = "") -> str:
    buttons = "".join(
        f"<button type='submit' name='rating' value='{n}'>{html.escape(csat.LABELS[n])}</button>"
        for n in range(5, 0, -1))
    problem = f"<p class='error' role='alert'>{html.escape(error)}</p>" if error else ""
    return (f"<h1>服务评价 <small class='muted'>Rate our service</small></h1>{problem}"
            f"<form method='post' action='{html.escape(action)}'><p>{_ASK}</p>"
            "<label for='comment'>留言（可选）/ Comment (optional)</label>"
            f"<textarea id='comment' name='comment' maxlength='{csat.MAX_COMMENT}'>{html.escape(comment)}</textarea>"
            f"<div class='ratings'>{buttons}</div></form>")


async def csat_form(request: web.Request) -> web.Response:
    """Show the rating buttons if the link is still good; otherwise say why not."""
    token = request.match_info["token"]
    async with request.app[CTX].db.session() as s:
        try:
            await csat.link_survey(s, token)
        except csat_link.LinkError as exc:
            return _page(f"<h1>服务评价 · Rate our service</h1><p>{html.escape(str(exc))}</p>", exc.status)
    return _page(_form(request.path))


async def csat_submit(request: web.Request) -> web.Response:
    """Record the rating (form fields `rating` 1-5 and optional `comment`) and thank the customer."""
    token = request.match_info["token"]
    form = await request.post()
    raw_rating, raw_comment = form.get("rating"), form.get("comment")
    comment = raw_comment.replace("\x00", "") if isinstance(raw_comment, str) else ""
    # isdecimal, not isdigit: int() takes full-width "５" but not superscript "²" (a ValueError, a 500).
    rating = int(raw_rating) if isinstance(raw_rating, str) and raw_rating.strip().isdecimal() \
        and len(raw_rating.strip()) < 4 else 0
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            survey = await csat.record_link_answer(tx, token, rating, comment)
            rated = survey.rating
    except csat_link.LinkError as exc:
        if exc.status == 400:  # fixable by the customer: show the form again with what they wrote
            return _page(_form(request.path, str(exc), comment[: csat.MAX_COMMENT * 2]), 400)
        return _page(f"<h1>服务评价 · Rate our service</h1><p>{html.escape(str(exc))}</p>", exc.status)
    return _page(f"<h1>感谢您的评价！<br><small class='muted'>Thank you for your feedback!</small></h1>"
                 f"<p>您的评分 / Your rating: {rated}/5</p>")


def add_routes(app: web.Application) -> None:
    """GET shows the form, POST records the rating."""
    app.router.add_get("/csat/{token}", csat_form)
    app.router.add_post("/csat/{token}", csat_submit)
