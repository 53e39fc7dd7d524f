"""Read a Microsoft Entra tenant's users through Microsoft Graph, as the app itself.

Modules, one concern each:

- ``config``: app settings, validated once (``Settings``, ``load_settings``).
- ``errors``: the exception tree the HTTP triggers map to status codes.
- ``credentials``: the client secret from Key Vault and the one shared MSAL app.
- ``graph``: the Graph client (session, retries, paging, cursors).
- ``api``: HTTP input validation and response shaping for the triggers.
- ``storage``: the sync's blob layout on azure-storage-blob.
- ``sync``: the delta sync job shared by the timer and the queue trigger.
- ``service``: the process-wide, lazily built wiring of the above.
"""
