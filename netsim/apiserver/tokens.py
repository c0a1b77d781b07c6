"""The serviceaccounts/token subresource: a TokenRequest (authentication.k8s.io/v1) answered with
a service account token, as `kubectl create token` asks for.  The token is a JWT (ES256, signed
with the cluster's pki sa.key, its kid the key's SHA-256 as kube-apiserver derives it) with the
claims kube-apiserver puts in one: iss, sub system:serviceaccount:NS:NAME, aud, exp, iat, nbf,
jti and kubernetes.io (namespace, service account name and uid, and the pod, secret or node a
bound token names, which must exist).  netsim authenticates client
certificates only: the token is well formed and verifiable with sa.key's public half, but the API
server does not accept it as a credential.
May import: the standard library, cryptography, netsim.model and netsim.apiserver (pki, status)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from netsim.apiserver import pki
from netsim.apiserver.status import StatusError, bad_request, invalid
from netsim.model import k8s

ISSUER = "https://kubernetes.default.svc.cluster.local"  # kubeadm's --service-account-issuer
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600  # kube-apiserver refuses shorter ones
MAX_SECONDS = 1 << 32
API_VERSION = "authentication.k8s.io/v1"


# What invalid() needs to name the kind in its Status (TokenRequest is not stored: no k8s.ALL entry).
_Kind = k8s.Kind("TokenRequest", API_VERSION, "token", True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def sign(key: ec.EllipticCurvePrivateKey, claims: dict) -> str:
    """A compact JWS (ES256): header.payload.signature, the signature r||s as RFC 7518 wants."""
    header = {"alg": "ES256", "kid": _kid(key)}
    signing_input = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _spec(doc: object, name: str) -> tuple[list[str], int]:
    """The request's audiences and lifetime, checked as kube-apiserver checks them."""
    if not isinstance(doc, dict):
        raise bad_request("the body of the request must be a TokenRequest object")
    if doc.get("kind", "TokenRequest") != "TokenRequest":
        raise bad_request(f"the kind in the data ({doc.get('kind')}) is not TokenRequest")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise invalid(_Kind, name, [("spec", "must be an object")])
    audiences = spec.get("audiences") or [ISSUER]
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise invalid(_Kind, name, [("spec.audiences", "must be a list of non-empty strings")])
    seconds = spec.get("expirationSeconds")
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise invalid(_Kind, name, [("spec.expirationSeconds", f"Invalid value: {seconds!r}: must be an integer")])
    if seconds < MIN_SECONDS:
        raise invalid(_Kind, name, [("spec.expirationSeconds", f"Invalid value: {seconds}: may not specify a "
                                     "duration less than 10 minutes")])
    if seconds > MAX_SECONDS:
        raise invalid(_Kind, name, [("spec.expirationSeconds", f"Invalid value: {seconds}: may not specify a "
                                     "duration larger than 2^32 seconds")])
    return audiences, seconds


def _stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


BINDABLE = ("Pod", "Secret", "Node")


def _bound(ref: object, lookup: Callable[[str, str], dict]) -> dict:
    """The kubernetes.io claim of the object the token is bound to (spec.boundObjectRef): it must
    exist (a 404 of its own otherwise) and have the uid the reference names, if it names one."""
    if not isinstance(ref, dict):
        raise bad_request("spec.boundObjectRef must be an object")
    kind, name = ref.get("kind"), ref.get("name")
    if kind not in BINDABLE or ref.get("apiVersion", "v1") != "v1":
        raise bad_request(f"cannot bind token to object of type {ref.get('apiVersion', '')}, Kind={kind}; "
                          f"fix: bind it to a v1 {', '.join(BINDABLE)}")
    if not name:
        raise bad_request("spec.boundObjectRef.name: Required value")
    obj = lookup(kind, name)
    uid = obj["metadata"].get("uid", "")
    if ref.get("uid") and ref["uid"] != uid:
        raise StatusError(409, f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                               "record. The object might have been deleted and then recreated", "Conflict")
    return {kind.lower(): {"name": name, "uid": uid}}


def token_request(paths: pki.Paths, service_account: dict, doc: object, lookup: Callable[[str, str], dict],
                  now: datetime.datetime | None = None) -> dict:
    """The TokenRequest answered: its spec as defaulted and status.token/expirationTimestamp.
    lookup(kind, name): the object a bound token names, in the service account's namespace
    (a Node: cluster-wide), raising the 404 StatusError when there is none."""
    meta = service_account["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    audiences, seconds = _spec(doc, name)
    spec = (doc.get("spec") if isinstance(doc, dict) else None) or {}
    bound = _bound(spec["boundObjectRef"], lookup) if spec.get("boundObjectRef") else {}
    try:
        key = pki.service_account_key(paths)
    except (OSError, ValueError) as exc:
        raise StatusError(500, f"Internal error occurred: no service account signing key: {exc}; fix: run "
                          "`netsim up` again to make the cluster's certificates", "InternalError") from None
    issued = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    expires = issued + datetime.timedelta(seconds=seconds)
    iat = int(issued.timestamp())
    claims = {"aud": audiences, "exp": iat + seconds, "iat": iat, "iss": ISSUER, "jti": str(uuid.uuid4()),
              "kubernetes.io": {"namespace": ns, **bound,
                                "serviceaccount": {"name": name, "uid": meta.get("uid", "")}},
              "nbf": iat, "sub": f"system:serviceaccount:{ns}:{name}"}
    return {"kind": "TokenRequest", "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": _stamp(issued)},
            "spec": {"audiences": audiences, "expirationSeconds": seconds,
                     "boundObjectRef": spec.get("boundObjectRef")},
            "status": {"token": sign(key, claims), "expirationTimestamp": _stamp(expires)}}
