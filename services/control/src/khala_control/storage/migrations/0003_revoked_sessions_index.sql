-- The recently revoked sessions (ControlService.ListRevokedSessions), read by
-- every gateway at start and after a broker reconnect.
CREATE INDEX device_sessions_revoked ON device_sessions (revoked_at) WHERE revoked_at IS NOT NULL;
