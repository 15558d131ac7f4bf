"""Measurements anyone can rerun: accuracy and speed figures for the README."""
