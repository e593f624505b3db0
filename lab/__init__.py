"""The A/B lab: reference problems with exact solutions, a runner that counts model calls, reports, CLI."""
