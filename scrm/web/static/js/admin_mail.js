// Admin → unroutable mail: received mail with no usable sender, kept with its raw source.
// Every value is customer-controlled text: it goes in through textContent (h()), never as HTML.
import { del, get } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtTime, t } from "./i18n.js";
import { toast } from "./toast.js";

const HEADERS = ["from", "reply-to", "sender", "return-path", "to", "date", "message-id"];

export async function unroutable(body) {
  const data = await get("/unroutable_mail?limit=200");
  const rows = data.items.map((m) => {
    const headers = h("dl.mail-headers", {}, HEADERS.filter((k) => m.headers[k]).map((k) =>
      [h("dt", { text: k }), h("dd", { text: m.headers[k].join(" · ") })]));
    const raw = m.has_raw ? h("a", { href: `/api/v1/unroutable_mail/${m.id}/raw`, download: `unroutable-${m.id}.eml`,
      "data-testid": "unroutable-raw", text: t("admin.unroutable_raw") }) : null;
    const dismiss = h("button", { text: t("admin.unroutable_dismiss"), on: { click: async () => {
      try {
        await del(`/unroutable_mail/${m.id}`);
        unroutable(body);
      } catch (err) {
        toast(err.message);
      }
    } } });
    return h("tr", { "data-testid": "unroutable-row" },
      h("td", {}, h("time", { text: fmtTime(m.received_at) })),
      h("td", {}, h("strong", { "data-testid": "unroutable-subject", text: m.subject || t("admin.unroutable_no_subject") }),
        h("p.muted", { text: m.reason }), headers),
      h("td", { text: `${Math.ceil(m.size / 1024)} KB` }),
      h("td", {}, raw, dismiss));
  });
  replace(body, h("h2", { text: t("admin.unroutable") }), h("p.muted", { text: t("admin.unroutable_hint") }),
    rows.length ? h("table.grid", { "data-testid": "unroutable-list" },
      h("tr", {}, [t("admin.unroutable_received"), t("admin.unroutable_mail"), t("admin.unroutable_size"), ""].map((x) => h("th", { text: x }))),
      rows)
      : h("p.muted", { "data-testid": "unroutable-empty", text: t("admin.unroutable_empty") }));
}
