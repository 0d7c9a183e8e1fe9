-- The voter application: a phone-in talent show.
--
-- Contestants and the area-code-to-state map are small and read by every
-- vote: replicated to every partition. Votes are partitioned on the phone
-- number, so each vote (check the caller's count, insert) is a
-- single-partition transaction.

CREATE TABLE contestants (
  contestant_number INTEGER NOT NULL,
  contestant_name VARCHAR(50) NOT NULL,
  CONSTRAINT pk_contestants PRIMARY KEY (contestant_number)
);

CREATE TABLE area_code_state (
  area_code SMALLINT NOT NULL,
  state VARCHAR(2) NOT NULL,
  CONSTRAINT pk_area_code_state PRIMARY KEY (area_code)
);

CREATE TABLE votes (
  phone_number BIGINT NOT NULL,
  state VARCHAR(2) NOT NULL,
  contestant_number INTEGER NOT NULL
);
PARTITION TABLE votes ON COLUMN phone_number;

-- Votes per caller: the per-phone limit is checked against this.
CREATE VIEW v_votes_by_phone_number (phone_number, num_votes)
  AS SELECT phone_number, COUNT(*) FROM votes GROUP BY phone_number;

-- Votes per contestant and state: the results board reads this. It does
-- not group by the partition column, so each partition holds partial
-- counts that multi-partition reads add up.
CREATE VIEW v_votes_by_contestant_number_state (contestant_number, state, num_votes)
  AS SELECT contestant_number, state, COUNT(*) FROM votes GROUP BY contestant_number, state;

CREATE PROCEDURE FROM CLASS voter.Initialize;
CREATE PROCEDURE PARTITION ON TABLE votes COLUMN phone_number FROM CLASS voter.Vote;
CREATE PROCEDURE FROM CLASS voter.Results;
