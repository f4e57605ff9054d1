"""Channel adapters: translate each platform to and from scrm.domain values.
May import only scrm.domain, their own package and third-party libraries (never the application)."""
