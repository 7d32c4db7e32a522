"""Measurement depth inside the case process: tensor breakdown, analytic prediction, FLOPs, quality.

Every public function returns plain JSON-serialisable dicts whose keys carry their unit
(`*_bytes`, `*_flops`, `*_flop_per_s`, `*_fraction`, `*_nats`).
"""
