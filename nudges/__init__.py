"""One-on-one nudges: shop events in, rules that turn them into messages, the guardrails every
message passes at send time (consent, caps, quiet hours, the channel's window, escalations), the
holdout that proves uplift, and the customers' RFM segments and health."""
