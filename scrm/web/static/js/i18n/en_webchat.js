// English strings of the web chat inbox settings (admin). {x} placeholders are plain text.
export const enWebchat = {
  "wc.open": "Widget", "wc.title": "Web chat: {name}", "wc.embed": "Embed code", "wc.embed_hint": "Paste this before </body> on every page of your site.",
  "wc.copy": "Copy", "wc.copied": "Copied", "wc.h5": "H5 chat page (WeChat, app web views)", "wc.qr": "QR code of the chat page",
  "wc.identity": "Identity validation", "wc.identity_hint": "Your server computes identifier_hash = HMAC-SHA256(this secret, identifier) in hex and passes it with the identifier.",
  "wc.secret_new": "Generate a new secret", "wc.secret_once": "Copy it now: it is shown only this once. The old secret no longer works.",
  "wc.secret_masked": "Stored secrets are never shown again. Generating a new one replaces it at once: update your server.",
  "wc.secret": "Secret", "wc.settings": "Settings", "wc.origins": "Allowed sites (one origin per line)",
  "wc.origins_hint": "e.g. https://shop.example.com or https://*.example.com. The widget refuses to load anywhere else.",
  "wc.chat_title": "Title", "wc.color": "Brand colour", "wc.greeting": "Greeting", "wc.away": "Away message",
  "wc.banner": "Business-hours banner", "wc.zh": "Chinese", "wc.en": "English", "wc.prechat": "Ask for contact details before the chat",
  "wc.field_off": "Not asked", "wc.field_optional": "Optional", "wc.field_required": "Required",
  "wc.field.name": "Name", "wc.field.email": "Email", "wc.field.phone": "Phone",
  "wc.custom": "Custom fields (one per line: key | label)", "wc.require_identity": "Only visitors signed in on my site (identity validation required)",
  "wc.offline_email": "Outside business hours, ask for an email", "wc.email_inbox": "Email inbox for transcripts and offline replies",
  "wc.none": "None", "wc.max_mb": "Largest attachment (MB)", "wc.save": "Save", "wc.saved": "Saved",
};
