"""The version of gradc, in a module of its own so that any module can import it without importing
the package (which imports everything)."""
__version__ = "0.1.0"
