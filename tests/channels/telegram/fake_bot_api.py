"""A local fake of the Telegram Bot API (aiohttp) speaking the real request/response format.

Reusable by channel tests, end-to-end tests and bench/telegram_delivery.py:

    async with FakeBotApi() as api:
        bot_base = api.base_url           # "http://127.0.0.1:<port>", use as api_base_url
        api.push_update({...})            # served by getUpdates
        api.add_file("AgAD...", b"...")   # served by getFile + /file/bot<token>/<path>
        api.fail_next("sendMessage", 429) # next sendMessage answers 429 retry_after=3
        api.calls                         # every call: ApiCall(method, params, files, at)

Methods: POST (or GET) /bot<token>/<method> with JSON, urlencoded or multipart bodies; answers
{"ok": true, "result": ...} or {"ok": false, "error_code": ..., "description": ...}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_TOKEN = "123456789:AAHfakeTokenForTests-0123456789abcdef"

# The Bot API's real error answers for the conditions tests need.
ERRORS: dict[int, tuple[str, dict[str, Any] | None]] = {
    400: ("Bad Request: chat not found", None),
    401: ("Unauthorized", None),
    403: ("Forbidden: bot was blocked by the user", None),
    429: ("Too Many Requests: retry after 3", {"retry_after": 3}),
    500: ("Internal Server Error", None),
    502: ("Bad Gateway", None),
}


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() when received


@dataclass
class _Failure:
    method: str | None
    status: int
    description: str
    parameters: dict[str, Any] | None


class FakeBotApi:
    """An in-process Bot API server on 127.0.0.1 with a random free port."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, bot_username: str = "scrm_test_bot",
                 flood_control: bool = False, latency: float = 0.0) -> None:
        """`flood_control`: answer 429 like Telegram when a send exceeds 30/s per bot, 1/s per
        private chat or 20/min per group. `latency`: seconds added to every answer."""
        self.token = token
        self.flood_control = flood_control
        self.latency = latency
        self._sent_at: dict[str, deque[float]] = defaultdict(deque)  # "*" and per chat
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.calls: list[ApiCall] = []
        self.webhook: dict[str, Any] = {}
        self.downloads: list[str] = []  # file paths served under /file/bot<token>/
        self._gone: set[str] = set()
        self._failures: deque[_Failure] = deque()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(100000001)
        self._new_update = asyncio.Event()
        self._files: dict[str, tuple[str, bytes, str]] = {}  # file_id -> (path, data, unique_id)
        self._message_ids: dict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp app (also usable with aiohttp's TestServer)."""
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        return app

    async def start(self) -> str:
        """Start listening; return the base URL (without /bot<token>)."""
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop the server."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test controls ---------------------------------------------------------------------
    def fail_next(
        self,
        method: str | None = None,
        status: int = 429,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Make the next call (of `method`, or any method) answer the given Bot API error."""
        default_desc, default_params = ERRORS.get(status, (f"Error {status}", None))
        self._failures.append(
            _Failure(method, status, description or default_desc, parameters or default_params)
        )

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (assigning an update_id if it has none)."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._new_update.set()
        return update

    def add_file(self, file_id: str, data: bytes, *, file_path: str | None = None,
                 file_unique_id: str | None = None, downloadable: bool = True) -> None:
        """Make a file known to getFile (and downloadable unless told otherwise: an expired path)."""
        path = file_path or f"documents/file_{len(self._files)}.bin"
        self._files[file_id] = (path, data, file_unique_id or f"uniq-{file_id[-8:]}")
        if not downloadable:
            self._gone.add(path)

    def calls_of(self, method: str) -> list[ApiCall]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    # -- handlers --------------------------------------------------------------------------
    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        # Bot API method names are case-insensitive; calls are recorded under the documented name.
        method = self._method_names().get(request.match_info["method"].lower(), request.match_info["method"])
        params, files = await _read_params(request)
        self.calls.append(ApiCall(method, params, files, time.monotonic()))
        for failure in list(self._failures):
            if failure.method in (None, method):
                self._failures.remove(failure)
                return _error(failure.status, failure.description, failure.parameters)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.flood_control and method.startswith("send") and self._flooded(str(params.get("chat_id"))):
            return _error(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found")
        result = await handler(params, files)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    def _flooded(self, chat_id: str) -> bool:
        """Sliding-window check of Telegram's documented broadcast limits; records accepted sends."""
        now = time.monotonic()
        is_group = chat_id.startswith("-") or chat_id.startswith("@")
        limits = [("*", 30, 1.0), (chat_id, 20, 60.0) if is_group else (chat_id, 1, 1.0)]
        for key, rate, per in limits:
            window = self._sent_at[key]
            while window and window[0] <= now - per:
                window.popleft()
            if len(window) >= rate:
                return True
        for key, _, _ in limits:
            self._sent_at[key].append(now)
        return False

    def _method_names(self) -> dict[str, str]:
        return {name[3:].lower(): name[3:] for name in dir(self) if name.startswith("_m_")}

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        for path, data, _ in self._files.values():
            if path == request.match_info["path"] and path not in self._gone:
                self.downloads.append(path)
                return web.Response(body=data, content_type="application/octet-stream")
        return _error(404, "Not Found")

    # -- Bot API methods -------------------------------------------------------------------
    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "SCRM Test",
                "username": self.bot_username}

    async def _m_getMe(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return {**self._bot_user(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _m_setWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = params
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = {}
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if self.webhook.get("url"):
            return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                               "use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        # Telegram forgets updates below the offset: they count as confirmed.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout)
            except TimeoutError:
                pass
        return self._updates[:limit]

    async def _m_getFile(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        entry = self._files.get(str(params.get("file_id")))
        if entry is None:
            return _error(400, "Bad Request: invalid file_id")
        path, data, unique = entry
        return {"file_id": params["file_id"], "file_unique_id": unique, "file_size": len(data),
                "file_path": path}

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        text = params.get("text")
        if not text:
            return _error(400, "Bad Request: message text is empty")
        if len(str(text)) > 4096:
            return _error(400, "Bad Request: message is too long")
        return self._check_markup(params) or self._message(params, text=text)

    async def _m_sendPhoto(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        size = len(files.get("photo", b""))
        photo = [{"file_id": f"AgACphoto{size}", "file_unique_id": "AQADphoto", "width": 90,
                  "height": 90, "file_size": size}]
        return self._check_markup(params) or self._message(params, photo=photo,
                                                           caption=params.get("caption"))

    async def _m_sendDocument(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        document = {"file_id": "BQACdoc", "file_unique_id": "AgADdoc",
                    "file_size": len(files.get("document", b""))}
        return self._check_markup(params) or self._message(params, document=document,
                                                           caption=params.get("caption"))

    def _check_markup(self, params: dict[str, Any]) -> web.Response | None:
        """400 BUTTON_DATA_INVALID for callback data outside 1-64 bytes, like Telegram."""
        markup = params.get("reply_markup")
        if isinstance(markup, dict):
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    data = button.get("callback_data")
                    if data is not None and not 1 <= len(data.encode("utf-8")) <= 64:
                        return _error(400, "Bad Request: BUTTON_DATA_INVALID")
        return None

    def _message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        try:
            chat_id = int(chat_id)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return _error(400, "Bad Request: chat not found")  # type: ignore[return-value]
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        if chat_id > 0:
            chat["first_name"] = "Customer"
        else:
            chat["title"] = "Group"
        message = {"message_id": next(self._message_ids[str(chat_id)]), "date": int(time.time()),
                   "chat": chat, "from": self._bot_user()}
        message.update({k: v for k, v in content.items() if v is not None})
        if isinstance(params.get("reply_markup"), dict):
            message["reply_markup"] = params["reply_markup"]
        return message


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parameters from the query, a JSON body, an urlencoded form or a multipart form."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        body = await request.read()
        if body:
            params.update(json.loads(body))
        return params, files
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:  # type: ignore[union-attr]
                files[part.name or ""] = await part.read()  # type: ignore[union-attr]
            else:
                params[part.name or ""] = _decode_field(await part.text())  # type: ignore[union-attr]
        return params, files
    if request.can_read_body:
        form = await request.post()
        params.update({k: _decode_field(str(v)) for k, v in form.items()})
    return params, files


def _decode_field(value: str) -> Any:
    """Form fields carry objects (reply_markup, allowed_updates) JSON-encoded, like Telegram expects."""
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
