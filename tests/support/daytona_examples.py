"""The seven payloads of Daytona's webhook docs, value for value and key for key.

Copied from the public documentation (shared/reference/daytona-webhooks-guide.md), so that
tests of the payload formats and of the organization face compare against the source.
"""

DAYTONA_DOC_EXAMPLES = [
    {
        "event": "sandbox.created",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "sandbox123",
        "organizationId": "org123",
        "state": "started",
        "class": "small",
        "createdAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "sandbox.state.updated",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "sandbox123",
        "organizationId": "org123",
        "oldState": "started",
        "newState": "stopped",
        "updatedAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "snapshot.created",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "snapshot123",
        "name": "my-snapshot",
        "organizationId": "org123",
        "state": "active",
        "createdAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "snapshot.state.updated",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "snapshot123",
        "name": "my-snapshot",
        "organizationId": "org123",
        "oldState": "building",
        "newState": "active",
        "updatedAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "snapshot.removed",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "snapshot123",
        "name": "my-snapshot",
        "organizationId": "org123",
        "removedAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "volume.created",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "vol-12345678",
        "name": "my-volume",
        "organizationId": "org123",
        "state": "ready",
        "createdAt": "2025-12-19T10:30:00.000Z",
    },
    {
        "event": "volume.state.updated",
        "timestamp": "2025-12-19T10:30:00.000Z",
        "id": "vol-12345678",
        "name": "my-volume",
        "organizationId": "org123",
        "oldState": "creating",
        "newState": "ready",
        "updatedAt": "2025-12-19T10:30:00.000Z",
    },
]
