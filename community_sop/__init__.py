"""Community SOP: group plans, firing, run log, check-in, keyword replies and moderation."""
