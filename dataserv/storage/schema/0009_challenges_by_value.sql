-- An answer names its challenges by value: find them through an index of their own,
-- not by scanning every challenge of the farmer's plots (an answer of 32 challenges
-- from a farmer with 10,000 plots read 40,000 rows a round).
CREATE INDEX challenges_challenge ON challenges (challenge);
