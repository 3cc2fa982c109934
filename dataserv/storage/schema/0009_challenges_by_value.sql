-- An answer names each challenge with its plot: find it through (plot, challenge),
-- not by reading every challenge of the farmer's plots (an answer of 32 challenges
-- from a farmer with 10,000 plots read 40,000 rows a round). Plot first: a round's
-- rows are drawn in plot order, so its inserts touch the index in order (an index on
-- the random challenge alone made each draw touch pages all over it).
CREATE INDEX challenges_plot_challenge ON challenges (plot, challenge);
