"""User-facing errors: each carries a one-line message that front ends show as is."""


class VirtualContrastError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""


class InputError(VirtualContrastError):
    """An input image is missing, unreadable or unusable (not 3D, NaN, constant, ...)."""


class GeometryError(VirtualContrastError):
    """Input images do not overlap enough in physical space."""


class MissingModalityError(VirtualContrastError):
    """The model needs an input modality that was not given."""


class CheckpointError(VirtualContrastError):
    """A checkpoint is missing, corrupt, tampered with or of an unknown format."""


class DeviceError(VirtualContrastError):
    """The requested compute device does not exist or cannot be used."""


class CancelledError(VirtualContrastError):
    """The user cancelled a running synthesis."""
