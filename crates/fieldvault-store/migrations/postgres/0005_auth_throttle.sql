-- Login throttling state (core::softlock), shared by every instance using this database.
CREATE TABLE auth_throttle (
    k TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    strikes BIGINT NOT NULL
);
