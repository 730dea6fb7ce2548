"""Tests of the NAVER Pay sandbox: state machines as plain functions, then the HTTP layer."""
