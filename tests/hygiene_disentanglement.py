"""Hygiene entries for SAP, the beta-VAE and the image factor set (issue #14 item 2): none takes a model to inspect."""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough.bench.zoo import factors
from seethrough.representations import disentanglement, vae

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    disentanglement.sap: "a metric over arrays; takes no model",
    disentanglement.sap_matrix: "a metric over arrays; takes no model",
    vae.BetaVAE: "a model class",
    vae.train_beta_vae: "trains a new model, or the one given as vae= (its name says it trains)",
    factors.factor_images: "builds data",
    factors.factor_vae: "builds a new model",
}
