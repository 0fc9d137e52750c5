"""Pure math for oretrace: BLS12-381 G1, Pedersen commitments, transcripts,
sigma proofs, Bulletproofs and claim proofs. No I/O, no domain words.

Modules (bottom-up; docs/protocol.md is the reference):

* `group`        the G1 group behind two backends (arkworks, py_ecc), strict encodings
* `generators`   G, H and the Bulletproof vectors (RFC 9380 hash_to_curve, versioned DST)
* `pedersen`     C = v*G + r*H, openings and their homomorphic arithmetic
* `transcript`   Fiat-Shamir transcripts with length-prefixed fields; prover nonce RNG
* `sigma`        OpeningProof (knowledge of (v, r)), ZeroProof (D_i = rho_i*H: balance)
* `bulletproofs` aggregated 64-bit range proofs and their batch verification
* `claims`       in-range, share (at most / at least) and non-negative claims over
                 range proofs, with the claim parameters bound into the transcript
* `errors`       DecodeError, ProofError, ProvingError
"""
