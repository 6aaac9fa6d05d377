"""Wiring of the shipping service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.skeleton import create_skeleton_app, run_service

SERVICE = "shipping"
DEFAULT_PORT = 8004


def create_app() -> FastAPI:
    return create_skeleton_app(SERVICE)


def run() -> None:
    run_service("shipping.main:create_app", DEFAULT_PORT)
