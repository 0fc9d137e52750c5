"""Pure math for oretrace: BLS12-381 G1, Pedersen commitments, transcripts,
sigma proofs, Bulletproofs and claim proofs. No I/O, no domain words."""
