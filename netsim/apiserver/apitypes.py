"""What the table and OpenAPI builders need to know of a served resource: the small Resource
record, and `as_resource`, which also accepts the model layer's Kind (api_version, plural,
namespaced, aliases), so that callers can pass either.  Pure; imports nothing of netsim."""

from __future__ import annotations

from dataclasses import dataclass

# What kube-apiserver allows on an ordinary resource (discovery's "verbs").
DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...] = DEFAULT_VERBS
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        """Where its group-version is served: api/v1 or apis/<group>/<version>."""
        return f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"


def as_resource(r: object) -> Resource:
    """A Resource from a Resource, or from anything shaped like netsim.model.k8s.Kind."""
    if isinstance(r, Resource):
        return r
    api_version = getattr(r, "api_version")  # noqa: B009 - a clear AttributeError names the field
    group, _, version = api_version.rpartition("/")
    return Resource(group, version, getattr(r, "kind"), getattr(r, "plural"),  # noqa: B009
                    bool(getattr(r, "namespaced")), tuple(getattr(r, "verbs", DEFAULT_VERBS) or DEFAULT_VERBS),  # noqa: B009
                    tuple(getattr(r, "short_names", None) or getattr(r, "aliases", ()) or ()))
