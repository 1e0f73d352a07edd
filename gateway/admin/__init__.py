"""The admin listener: metrics, liveness, readiness and the status page on their own port."""
