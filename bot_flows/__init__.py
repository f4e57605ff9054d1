"""The bot engine: flows, FAQ matching and knowledge-base files, pure and testable.
May import only scrm.domain, its own package and third-party libraries (never the application)."""
