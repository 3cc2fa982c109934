-- Proof of space (dataserv/proofs): plots bound to a farmer, the challenges drawn
-- for them, and what each farmer has proved.

-- What the last scoring round found for each farmer: the count of its registered
-- plots and the bytes they proved (see dataserv/proofs/scoring.py). Legacy farmers
-- keep 0 and 0.
ALTER TABLE farmers
    ADD COLUMN plots          integer NOT NULL DEFAULT 0,
    ADD COLUMN verified_bytes bigint NOT NULL DEFAULT 0;

-- Verified terabytes beside the claimed ones.
ALTER TABLE totals_history
    ADD COLUMN verified_tb double precision NOT NULL DEFAULT 0;

-- plot_id = SHA-256(domain tag || farmer's nodeid || seed), computed by the server.
-- Its uniqueness makes one plot count once, however many times it is registered.
CREATE TABLE plots (
    id            bigserial PRIMARY KEY,
    plot_id       bytea NOT NULL UNIQUE CHECK (length(plot_id) = 32),
    farmer_id     bigint NOT NULL REFERENCES farmers (id) ON DELETE CASCADE,
    seed          bytea NOT NULL CHECK (length(seed) = 32),
    k             smallint NOT NULL,
    registered_at double precision NOT NULL
);
CREATE INDEX plots_farmer ON plots (farmer_id);

-- One row per challenge drawn for a plot. fetched_at is the first fetch (a later
-- fetch never moves it: the proof window starts there); answered_at and proofs
-- are written once, by the first answer that came within the window.
CREATE TABLE challenges (
    id          bigserial PRIMARY KEY,
    plot        bigint NOT NULL REFERENCES plots (id) ON DELETE CASCADE,
    challenge   bytea NOT NULL CHECK (length(challenge) = 32),
    issued_at   double precision NOT NULL,
    fetched_at  double precision,
    answered_at double precision,
    proofs      integer NOT NULL DEFAULT 0
);
CREATE INDEX challenges_plot ON challenges (plot, issued_at);
CREATE INDEX challenges_issued ON challenges (issued_at);
