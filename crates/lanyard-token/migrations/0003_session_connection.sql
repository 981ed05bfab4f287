-- The SSO connection a session signed in through: switching organizations requires the target to
-- accept it, and deleting the connection ends the session. Sessions from before have none.
ALTER TABLE sessions ADD COLUMN connection_id TEXT;
