"""pytest plugin for apps that mount the auth service (opt-in; see README)."""
