"""HTTP entrypoint: the routes of returns and of support cases."""

from __future__ import annotations

from fastapi import APIRouter

from customer_service.cases.api import router as cases_router
from customer_service.returns.api import router as returns_router

router = APIRouter()
router.include_router(returns_router)
router.include_router(cases_router)
