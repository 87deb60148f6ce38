"""Drehscheibe: a secured data-exchange gateway for eCH / sedex messages."""

__version__ = "0.1.0"
