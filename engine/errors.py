"""One exception root, so embedding code catches a single type."""

from collections.abc import Sequence


class LeadflowError(Exception):
    """Base of every error Leadflow raises on purpose."""


class InvalidWorkflow(LeadflowError):
    """A workflow document failed validation; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[object]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


class ActionFailed(LeadflowError):
    """A node could not do its job for this contact; the run fails, the others go on."""


class DeployConflict(LeadflowError):
    """The same workflow id and version is already deployed with a different document."""


class UnknownContact(LeadflowError):
    """No contact has the id that was asked for."""


class StoreFromNewerRelease(LeadflowError):
    """The store's schema revision is not one this release knows: a newer release
    upgraded it. Nothing is changed; this release cannot read or migrate it."""


class NotALeadflowStore(LeadflowError):
    """The database already holds tables with the names of Leadflow's but no Leadflow
    schema revision: another application's, or made by hand. Nothing is changed."""
