"""A local emulated tenant: Entra ID, managed identity, Key Vault and Microsoft Graph.

It serves the real wire protocols over HTTPS on loopback with a CA it creates,
so the app's production code (MSAL, azure-identity, azure-keyvault-secrets,
requests) runs against it unchanged: only URLs and the trusted CA differ.

    from emulator import Emulator
    with Emulator(users=500) as emu:
        os.environ.update(emu.app_settings())

Run it on its own with ``python -m emulator``.
"""

from .faults import Fault
from .server import Emulator

__all__ = ["Emulator", "Fault"]
