"""/openapi/v2 as protobuf: gnostic's openapi.v2.Document, the encoding kubectl asks for
(application/com.github.proto-openapi.spec.v2@v1.0+protobuf) when it validates a file client-side
(a `kind: List`'s items, which server-side field validation cannot see as one object).

The message types are gnostic's OpenAPIv2.proto, written down below in proto3 syntax (field names
and numbers as upstream's) and turned into descriptors at import time with descriptor_pb2, so there
is no generated module and no protoc.  `encode` converts a Swagger 2.0 document (a dict, as
netsim.apiserver.openapi builds it) the way gnostic's compiler reads JSON: vendor extensions
(x-...), defaults, examples and enum values are Any messages carrying YAML text (JSON is YAML),
which is how kube-openapi reads x-kubernetes-group-version-kind back.  Keys without a field in
gnostic's schema are dropped, as gnostic does.  Pure.  May use: the standard library and protobuf."""

from __future__ import annotations

import json
import re

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

# What kube-openapi's handler answers with.  client-go asks for the older name with "@", which
# the handler still accepts; it cannot answer with it, "@" being no token character for a media
# type (Go's mime.ParseMediaType in kubectl refuses it).
CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = (CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")


def negotiate(accept: str) -> str | None:
    """The media type to answer /openapi/v2 with (JSON or CONTENT_TYPE) for an Accept header: the
    acceptable one of highest q, the first listed on a tie; JSON without a header; None (406) when
    neither is acceptable."""
    if not accept.strip():
        return JSON
    best, best_q = None, 0.0
    for entry in accept.split(","):
        kind, *params = (p.strip() for p in entry.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        chosen = (JSON if kind in (JSON, "application/*", "*/*") else
                  CONTENT_TYPE if kind in _PROTOBUF_TYPES else None)
        if chosen and q > best_q:
            best, best_q = chosen, q
    return best

# gnostic openapiv2/OpenAPIv2.proto (package openapi.v2), comments and options left out.
_PROTO = """
message AdditionalPropertiesItem { oneof oneof { Schema schema = 1; bool boolean = 2; } }
message Any { google.protobuf.Any value = 1; string yaml = 2; }
message ApiKeySecurity { string type = 1; string name = 2; string in = 3; string description = 4;
  repeated NamedAny vendor_extension = 5; }
message BasicAuthenticationSecurity { string type = 1; string description = 2; repeated NamedAny vendor_extension = 3; }
message BodyParameter { string description = 1; string name = 2; string in = 3; bool required = 4; Schema schema = 5;
  repeated NamedAny vendor_extension = 6; }
message Contact { string name = 1; string url = 2; string email = 3; repeated NamedAny vendor_extension = 4; }
message Default { repeated NamedAny additional_properties = 1; }
message Definitions { repeated NamedSchema additional_properties = 1; }
message Document { string swagger = 1; Info info = 2; string host = 3; string base_path = 4;
  repeated string schemes = 5; repeated string consumes = 6; repeated string produces = 7; Paths paths = 8;
  Definitions definitions = 9;
  ParameterDefinitions parameters = 10; ResponseDefinitions responses = 11; repeated SecurityRequirement security = 12;
  SecurityDefinitions security_definitions = 13; repeated Tag tags = 14; ExternalDocs external_docs = 15;
  repeated NamedAny vendor_extension = 16; }
message Examples { repeated NamedAny additional_properties = 1; }
message ExternalDocs { string description = 1; string url = 2; repeated NamedAny vendor_extension = 3; }
message FileSchema { string format = 1; string title = 2; string description = 3; Any default = 4;
  repeated string required = 5; string type = 6; bool read_only = 7; ExternalDocs external_docs = 8; Any example = 9;
  repeated NamedAny vendor_extension = 10; }
message FormDataParameterSubSchema { bool required = 1; string in = 2; string description = 3; string name = 4;
  bool allow_empty_value = 5; string type = 6; string format = 7; PrimitivesItems items = 8;
  string collection_format = 9; Any default = 10; double maximum = 11; bool exclusive_maximum = 12;
  double minimum = 13; bool exclusive_minimum = 14; int64 max_length = 15; int64 min_length = 16; string pattern = 17;
  int64 max_items = 18; int64 min_items = 19; bool unique_items = 20; repeated Any enum = 21; double multiple_of = 22;
  repeated NamedAny vendor_extension = 23; }
message Header { string type = 1; string format = 2; PrimitivesItems items = 3; string collection_format = 4;
  Any default = 5; double maximum = 6; bool exclusive_maximum = 7; double minimum = 8; bool exclusive_minimum = 9;
  int64 max_length = 10; int64 min_length = 11; string pattern = 12; int64 max_items = 13; int64 min_items = 14;
  bool unique_items = 15; repeated Any enum = 16; double multiple_of = 17; string description = 18;
  repeated NamedAny vendor_extension = 19; }
message HeaderParameterSubSchema { bool required = 1; string in = 2; string description = 3; string name = 4;
  string type = 5; string format = 6; PrimitivesItems items = 7; string collection_format = 8; Any default = 9;
  double maximum = 10; bool exclusive_maximum = 11; double minimum = 12; bool exclusive_minimum = 13;
  int64 max_length = 14; int64 min_length = 15; string pattern = 16; int64 max_items = 17; int64 min_items = 18;
  bool unique_items = 19; repeated Any enum = 20; double multiple_of = 21; repeated NamedAny vendor_extension = 22; }
message Headers { repeated NamedHeader additional_properties = 1; }
message Info { string title = 1; string version = 2; string description = 3; string terms_of_service = 4;
  Contact contact = 5; License license = 6; repeated NamedAny vendor_extension = 7; }
message ItemsItem { repeated Schema schema = 1; }
message JsonReference { string _ref = 1; string description = 2; }
message License { string name = 1; string url = 2; repeated NamedAny vendor_extension = 3; }
message NamedAny { string name = 1; Any value = 2; }
message NamedHeader { string name = 1; Header value = 2; }
message NamedParameter { string name = 1; Parameter value = 2; }
message NamedPathItem { string name = 1; PathItem value = 2; }
message NamedResponse { string name = 1; Response value = 2; }
message NamedResponseValue { string name = 1; ResponseValue value = 2; }
message NamedSchema { string name = 1; Schema value = 2; }
message NamedSecurityDefinitionsItem { string name = 1; SecurityDefinitionsItem value = 2; }
message NamedString { string name = 1; string value = 2; }
message NamedStringArray { string name = 1; StringArray value = 2; }
message NonBodyParameter { oneof oneof { HeaderParameterSubSchema header_parameter_sub_schema = 1;
  FormDataParameterSubSchema form_data_parameter_sub_schema = 2; QueryParameterSubSchema query_parameter_sub_schema = 3;
  PathParameterSubSchema path_parameter_sub_schema = 4; } }
message Oauth2AccessCodeSecurity { string type = 1; string flow = 2; Oauth2Scopes scopes = 3;
  string authorization_url = 4; string token_url = 5; string description = 6; repeated NamedAny vendor_extension = 7; }
message Oauth2ApplicationSecurity { string type = 1; string flow = 2; Oauth2Scopes scopes = 3; string token_url = 4;
  string description = 5; repeated NamedAny vendor_extension = 6; }
message Oauth2ImplicitSecurity { string type = 1; string flow = 2; Oauth2Scopes scopes = 3;
  string authorization_url = 4; string description = 5; repeated NamedAny vendor_extension = 6; }
message Oauth2PasswordSecurity { string type = 1; string flow = 2; Oauth2Scopes scopes = 3; string token_url = 4;
  string description = 5; repeated NamedAny vendor_extension = 6; }
message Oauth2Scopes { repeated NamedString additional_properties = 1; }
message Operation { repeated string tags = 1; string summary = 2; string description = 3;
  ExternalDocs external_docs = 4; string operation_id = 5; repeated string produces = 6; repeated string consumes = 7;
  repeated ParametersItem parameters = 8; Responses responses = 9; repeated string schemes = 10; bool deprecated = 11;
  repeated SecurityRequirement security = 12; repeated NamedAny vendor_extension = 13; }
message Parameter { oneof oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; } }
message ParameterDefinitions { repeated NamedParameter additional_properties = 1; }
message ParametersItem { oneof oneof { Parameter parameter = 1; JsonReference json_reference = 2; } }
message PathItem { string _ref = 1; Operation get = 2; Operation put = 3; Operation post = 4; Operation delete = 5;
  Operation options = 6; Operation head = 7; Operation patch = 8; repeated ParametersItem parameters = 9;
  repeated NamedAny vendor_extension = 10; }
message PathParameterSubSchema { bool required = 1; string in = 2; string description = 3; string name = 4;
  string type = 5; string format = 6; PrimitivesItems items = 7; string collection_format = 8; Any default = 9;
  double maximum = 10; bool exclusive_maximum = 11; double minimum = 12; bool exclusive_minimum = 13;
  int64 max_length = 14; int64 min_length = 15; string pattern = 16; int64 max_items = 17; int64 min_items = 18;
  bool unique_items = 19; repeated Any enum = 20; double multiple_of = 21; repeated NamedAny vendor_extension = 22; }
message Paths { repeated NamedAny vendor_extension = 1; repeated NamedPathItem path = 2; }
message PrimitivesItems { string type = 1; string format = 2; PrimitivesItems items = 3; string collection_format = 4;
  Any default = 5; double maximum = 6; bool exclusive_maximum = 7; double minimum = 8; bool exclusive_minimum = 9;
  int64 max_length = 10; int64 min_length = 11; string pattern = 12; int64 max_items = 13; int64 min_items = 14;
  bool unique_items = 15; repeated Any enum = 16; double multiple_of = 17; repeated NamedAny vendor_extension = 18; }
message Properties { repeated NamedSchema additional_properties = 1; }
message QueryParameterSubSchema { bool required = 1; string in = 2; string description = 3; string name = 4;
  bool allow_empty_value = 5; string type = 6; string format = 7; PrimitivesItems items = 8;
  string collection_format = 9; Any default = 10; double maximum = 11; bool exclusive_maximum = 12;
  double minimum = 13; bool exclusive_minimum = 14; int64 max_length = 15; int64 min_length = 16; string pattern = 17;
  int64 max_items = 18; int64 min_items = 19; bool unique_items = 20; repeated Any enum = 21; double multiple_of = 22;
  repeated NamedAny vendor_extension = 23; }
message Response { string description = 1; SchemaItem schema = 2; Headers headers = 3; Examples examples = 4;
  repeated NamedAny vendor_extension = 5; }
message ResponseDefinitions { repeated NamedResponse additional_properties = 1; }
message ResponseValue { oneof oneof { Response response = 1; JsonReference json_reference = 2; } }
message Responses { repeated NamedResponseValue response_code = 1; repeated NamedAny vendor_extension = 2; }
message Schema { string _ref = 1; string format = 2; string title = 3; string description = 4; Any default = 5;
  double multiple_of = 6; double maximum = 7; bool exclusive_maximum = 8; double minimum = 9;
  bool exclusive_minimum = 10; int64 max_length = 11; int64 min_length = 12; string pattern = 13; int64 max_items = 14;
  int64 min_items = 15; bool unique_items = 16; int64 max_properties = 17; int64 min_properties = 18;
  repeated string required = 19; repeated Any enum = 20; AdditionalPropertiesItem additional_properties = 21;
  TypeItem type = 22; ItemsItem items = 23; repeated Schema all_of = 24; Properties properties = 25;
  string discriminator = 26; bool read_only = 27; Xml xml = 28; ExternalDocs external_docs = 29; Any example = 30;
  repeated NamedAny vendor_extension = 31; }
message SchemaItem { oneof oneof { Schema schema = 1; FileSchema file_schema = 2; } }
message SecurityDefinitions { repeated NamedSecurityDefinitionsItem additional_properties = 1; }
message SecurityDefinitionsItem { oneof oneof { BasicAuthenticationSecurity basic_authentication_security = 1;
  ApiKeySecurity api_key_security = 2; Oauth2ImplicitSecurity oauth2_implicit_security = 3;
  Oauth2PasswordSecurity oauth2_password_security = 4; Oauth2ApplicationSecurity oauth2_application_security = 5;
  Oauth2AccessCodeSecurity oauth2_access_code_security = 6; } }
message SecurityRequirement { repeated NamedStringArray additional_properties = 1; }
message StringArray { repeated string value = 1; }
message Tag { string name = 1; string description = 2; ExternalDocs external_docs = 3;
  repeated NamedAny vendor_extension = 4; }
message TypeItem { repeated string value = 1; }
message VendorExtension { repeated NamedAny additional_properties = 1; }
message Xml { string name = 1; string namespace = 2; string prefix = 3; bool attribute = 4; bool wrapped = 5;
  repeated NamedAny vendor_extension = 6; }
"""

_PACKAGE = "openapi.v2"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "double": _F.TYPE_DOUBLE, "int64": _F.TYPE_INT64}
_MESSAGE = re.compile(r"message (\w+) \{(.*?)\}\s*(?=message |\Z)", re.S)
_FIELD = re.compile(r"(repeated )?([\w.]+) (\w+) = (\d+);")


def _file() -> descriptor_pb2.FileDescriptorProto:
    """_PROTO as a FileDescriptorProto: each message's fields, a oneof's members tagged with it."""
    f = descriptor_pb2.FileDescriptorProto(name="openapiv2/OpenAPIv2.proto", package=_PACKAGE, syntax="proto3",
                                           dependency=["google/protobuf/any.proto"])
    for name, body in _MESSAGE.findall(_PROTO):
        m = f.message_type.add(name=name)
        oneof = "oneof oneof {" in body
        if oneof:
            m.oneof_decl.add(name="oneof")
        for repeated, kind, field, number in _FIELD.findall(body):
            d = m.field.add(name=field, number=int(number), json_name=_camel(field),
                            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if kind in _SCALARS:
                d.type = _SCALARS[kind]
            else:
                d.type = _F.TYPE_MESSAGE
                d.type_name = "." + (kind if "." in kind else f"{_PACKAGE}.{kind}")
            if oneof:
                d.oneof_index = 0
    return f


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(any_pb2.DESCRIPTOR.serialized_pb))
    fd = pool.Add(_file())
    return {name: message_factory.GetMessageClass(fd.message_types_by_name[name])
            for name in fd.message_types_by_name}


MESSAGES = _classes()
Document = MESSAGES["Document"]


# -- the conversion (gnostic's JSON names to its fields) -----------------------------------------

def _yaml(value) -> str:
    # YAML 1.2 is a superset of JSON; kube-openapi decodes these with a YAML parser.
    return json.dumps(value, separators=(",", ":"))


def _any(m, value) -> None:
    m.yaml = _yaml(value)


def _extensions(repeated, d: dict) -> None:
    for k, v in d.items():
        if k.startswith("x-"):
            e = repeated.add(name=k)
            e.value.yaml = _yaml(v)


def _scalars(m, d: dict, fields: dict[str, str]) -> None:
    """Copies d's keys named in fields (JSON name -> proto field) that d has.  A value of the wrong
    type (a CRD's schema says "maximum": "5") is left out rather than failing the whole document,
    which kubectl needs for every List."""
    for key, field in fields.items():
        if key in d:
            v = d[key]
            try:
                if isinstance(v, list):
                    getattr(m, field).extend(v)
                else:
                    setattr(m, field, v)
            except (TypeError, ValueError, AttributeError):
                pass


_SCHEMA_SCALARS = {"$ref": "_ref", "format": "format", "title": "title", "description": "description",
                   "multipleOf": "multiple_of", "maximum": "maximum", "exclusiveMaximum": "exclusive_maximum",
                   "minimum": "minimum", "exclusiveMinimum": "exclusive_minimum", "maxLength": "max_length",
                   "minLength": "min_length", "pattern": "pattern", "maxItems": "max_items", "minItems": "min_items",
                   "uniqueItems": "unique_items", "maxProperties": "max_properties",
                   "minProperties": "min_properties", "required": "required", "discriminator": "discriminator",
                   "readOnly": "read_only"}
_PRIMITIVE_SCALARS = {"type": "type", "format": "format", "collectionFormat": "collection_format",
                      "maximum": "maximum", "exclusiveMaximum": "exclusive_maximum", "minimum": "minimum",
                      "exclusiveMinimum": "exclusive_minimum", "maxLength": "max_length", "minLength": "min_length",
                      "pattern": "pattern", "maxItems": "max_items", "minItems": "min_items",
                      "uniqueItems": "unique_items", "multipleOf": "multiple_of"}
_PARAMETER_SCALARS = {"required": "required", "in": "in", "description": "description", "name": "name",
                      **_PRIMITIVE_SCALARS}
_NON_BODY = {"header": "header_parameter_sub_schema", "formData": "form_data_parameter_sub_schema",
             "query": "query_parameter_sub_schema", "path": "path_parameter_sub_schema"}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_OPERATION_SCALARS = {"tags": "tags", "summary": "summary", "description": "description",
                      "operationId": "operation_id", "produces": "produces", "consumes": "consumes",
                      "schemes": "schemes", "deprecated": "deprecated"}


def _schema(m, s: dict) -> None:
    m.SetInParent()  # an empty schema ({}) is still there: kube-openapi tells "no schema" from "any value"
    _scalars(m, s, _SCHEMA_SCALARS)
    for key, field in (("default", "default"), ("example", "example")):
        if key in s:
            _any(getattr(m, field), s[key])
    for v in _list(s.get("enum")):
        _any(m.enum.add(), v)
    if "type" in s:
        t = s["type"]
        m.type.value.extend(x for x in (t if isinstance(t, list) else [t]) if isinstance(x, str))
    if "items" in s:
        items = s["items"]
        for sub in items if isinstance(items, list) else [items]:
            if isinstance(sub, dict):
                _schema(m.items.schema.add(), sub)
    if "additionalProperties" in s:
        extra = s["additionalProperties"]
        if isinstance(extra, bool):
            m.additional_properties.boolean = extra
        elif isinstance(extra, dict):
            _schema(m.additional_properties.schema, extra)
    for sub in _list(s.get("allOf")):
        if isinstance(sub, dict):
            _schema(m.all_of.add(), sub)
    if isinstance(s.get("properties"), dict):
        m.properties.SetInParent()
        add = m.properties.additional_properties.add
        for name, sub in s["properties"].items():
            if isinstance(sub, dict):
                _schema(add(name=name).value, sub)
    if isinstance(s.get("externalDocs"), dict):
        _docs(m.external_docs, s["externalDocs"])
    if isinstance(s.get("xml"), dict):
        _scalars(m.xml, s["xml"], {k: k for k in ("name", "namespace", "prefix", "attribute", "wrapped")})
        _extensions(m.xml.vendor_extension, s["xml"])
    _extensions(m.vendor_extension, s)


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _docs(m, d: dict) -> None:
    _scalars(m, d, {"description": "description", "url": "url"})
    _extensions(m.vendor_extension, d)


def _primitive(m, d: dict, fields: dict[str, str]) -> None:
    """A non-body parameter, header or primitives item: the scalars, items, default and enum."""
    _scalars(m, d, fields)
    if "allowEmptyValue" in d and hasattr(m, "allow_empty_value"):
        m.allow_empty_value = d["allowEmptyValue"]
    if "items" in d:
        _primitive(m.items, d["items"], _PRIMITIVE_SCALARS)
    if "default" in d:
        _any(m.default, d["default"])
    for v in d.get("enum", ()):
        _any(m.enum.add(), v)
    _extensions(m.vendor_extension, d)


def _parameter(m, p: dict) -> None:
    """m: a Parameter."""
    if p.get("in") == "body":
        b = m.body_parameter
        _scalars(b, p, {"description": "description", "name": "name", "in": "in", "required": "required"})
        if "schema" in p:
            _schema(b.schema, p["schema"])
        _extensions(b.vendor_extension, p)
    elif p.get("in") in _NON_BODY:
        _primitive(getattr(m.non_body_parameter, _NON_BODY[p["in"]]), p, _PARAMETER_SCALARS)


def _parameters(repeated, params: list[dict]) -> None:
    for p in params:
        item = repeated.add()
        if "$ref" in p:
            item.json_reference._ref = p["$ref"]
        else:
            _parameter(item.parameter, p)


def _response(m, r: dict) -> None:
    _scalars(m, r, {"description": "description"})
    if "schema" in r:
        if r["schema"].get("type") == "file":
            f = m.schema.file_schema
            _scalars(f, r["schema"], {"format": "format", "title": "title", "description": "description",
                                      "required": "required", "type": "type", "readOnly": "read_only"})
            _extensions(f.vendor_extension, r["schema"])
        else:
            _schema(m.schema.schema, r["schema"])
    for name, h in (r.get("headers") or {}).items():
        header = m.headers.additional_properties.add(name=name).value
        _primitive(header, h, {**_PRIMITIVE_SCALARS, "description": "description"})
    for name, v in (r.get("examples") or {}).items():
        _any(m.examples.additional_properties.add(name=name).value, v)
    _extensions(m.vendor_extension, r)


def _operation(m, o: dict) -> None:
    _scalars(m, o, _OPERATION_SCALARS)
    if "externalDocs" in o:
        _docs(m.external_docs, o["externalDocs"])
    _parameters(m.parameters, o.get("parameters", ()))
    responses = o.get("responses") or {}
    m.responses.SetInParent()
    for code, r in responses.items():
        if code.startswith("x-"):
            continue
        value = m.responses.response_code.add(name=code).value
        if "$ref" in r:
            value.json_reference._ref = r["$ref"]
        else:
            _response(value.response, r)
    _extensions(m.responses.vendor_extension, responses)
    for req in o.get("security", ()):
        _security_requirement(m.security.add(), req)
    _extensions(m.vendor_extension, o)


def _security_requirement(m, req: dict) -> None:
    for name, scopes in req.items():
        m.additional_properties.add(name=name).value.value.extend(scopes)


def _security_definition(m, d: dict) -> None:
    """m: a SecurityDefinitionsItem, its member chosen by type (and flow for OAuth 2)."""
    kind = d.get("type")
    if kind == "basic":
        member = m.basic_authentication_security
    elif kind == "apiKey":
        member = m.api_key_security
    elif kind == "oauth2":
        member = getattr(m, {"implicit": "oauth2_implicit_security", "password": "oauth2_password_security",
                             "application": "oauth2_application_security",
                             "accessCode": "oauth2_access_code_security"}.get(d.get("flow"),
                                                                              "oauth2_implicit_security"))
    else:
        return
    fields = {"type": "type", "name": "name", "in": "in", "description": "description", "flow": "flow",
              "authorizationUrl": "authorization_url", "tokenUrl": "token_url"}
    _scalars(member, d, {k: v for k, v in fields.items() if hasattr(member, v)})
    if "scopes" in d and hasattr(member, "scopes"):
        for name, text in d["scopes"].items():
            member.scopes.additional_properties.add(name=name, value=text)
    _extensions(member.vendor_extension, d)


def encode(doc: dict) -> bytes:
    """A Swagger 2.0 document as gnostic's openapi.v2.Document, serialized."""
    m = Document()
    _scalars(m, doc, {"swagger": "swagger", "host": "host", "basePath": "base_path", "schemes": "schemes",
                      "consumes": "consumes", "produces": "produces"})
    if "info" in doc:
        info = doc["info"]
        _scalars(m.info, info, {"title": "title", "version": "version", "description": "description",
                                "termsOfService": "terms_of_service"})
        if "contact" in info:
            _scalars(m.info.contact, info["contact"], {"name": "name", "url": "url", "email": "email"})
            _extensions(m.info.contact.vendor_extension, info["contact"])
        if "license" in info:
            _scalars(m.info.license, info["license"], {"name": "name", "url": "url"})
            _extensions(m.info.license.vendor_extension, info["license"])
        _extensions(m.info.vendor_extension, info)
    paths = doc.get("paths") or {}
    m.paths.SetInParent()
    for path, item in paths.items():
        if path.startswith("x-"):
            continue
        pi = m.paths.path.add(name=path).value
        if "$ref" in item:
            pi._ref = item["$ref"]
        for method in _METHODS:
            if method in item:
                _operation(getattr(pi, method), item[method])
        _parameters(pi.parameters, item.get("parameters", ()))
        _extensions(pi.vendor_extension, item)
    _extensions(m.paths.vendor_extension, paths)
    if "definitions" in doc:
        m.definitions.SetInParent()
        add = m.definitions.additional_properties.add
        for name, s in doc["definitions"].items():
            _schema(add(name=name).value, s)
    for name, p in (doc.get("parameters") or {}).items():
        _parameter(m.parameters.additional_properties.add(name=name).value, p)
    for name, r in (doc.get("responses") or {}).items():
        _response(m.responses.additional_properties.add(name=name).value, r)
    for req in doc.get("security", ()):
        _security_requirement(m.security.add(), req)
    for name, d in (doc.get("securityDefinitions") or {}).items():
        _security_definition(m.security_definitions.additional_properties.add(name=name).value, d)
    for t in doc.get("tags", ()):
        tag = m.tags.add()
        _scalars(tag, t, {"name": "name", "description": "description"})
        if "externalDocs" in t:
            _docs(tag.external_docs, t["externalDocs"])
        _extensions(tag.vendor_extension, t)
    if "externalDocs" in doc:
        _docs(m.external_docs, doc["externalDocs"])
    _extensions(m.vendor_extension, doc)
    return m.SerializeToString()
