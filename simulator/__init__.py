"""The simulator: BIP-like datasets in the data contract, with the true chances beside them.

A tool for demos, tests and benchmarks, outside the product's stages: it imports `features` (to
write the contract and measure its calibration) but features, training, serving and the research
analyses never import it (`lint-imports`), so nothing that predicts can read the planted truth.
"""
