"""An OpenAPI 3.1 document generated from the metamodel: one schema and five paths per entity."""

from __future__ import annotations

from typing import Any

from engine.metamodel import EntitySpec, FieldSpec, FieldType, Metamodel

DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal as text"}
MONEY_OUT = {"type": "object", "properties": {"amount": DECIMAL, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
             "required": ["amount", "currency"]}
_SIMPLE: dict[FieldType, dict[str, Any]] = {
    FieldType.TEXT: {"type": "string"},
    FieldType.INTEGER: {"type": "integer"},
    FieldType.DECIMAL: DECIMAL,
    FieldType.MONEY: MONEY_OUT,
    FieldType.BOOLEAN: {"type": "boolean"},
    FieldType.DATE: {"type": "string", "format": "date"},
    FieldType.DATETIME: {"type": "string", "format": "date-time"},
    FieldType.PHONE: {"type": "string", "description": "E.164, e.g. +8613800138000"},
    FieldType.EMAIL: {"type": "string", "format": "email"},
    FieldType.URL: {"type": "string", "format": "uri"},
    FieldType.LINK: {"type": "integer", "minimum": 1},
    FieldType.USER: {"type": "integer", "minimum": 1},
    FieldType.ATTACHMENT: {"type": "integer", "minimum": 1, "description": "id from POST /api/files"},
    FieldType.JSON: {},
    FieldType.TAGS: {"type": "array", "items": {"type": "string"}},
}
ERROR = {
    "type": "object", "required": ["code", "message", "field"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": ["string", "null"]},
                   "errors": {"type": "array", "items": {"type": "object", "properties": {
                       "code": {"type": "string"}, "message": {"type": "string"},
                       "field": {"type": ["string", "null"]}}}},
                   "missing": {"type": "array", "description": "stage_requirements: every missing item", "items": {
                       "type": "object", "properties": {
                           "stage": {"type": "string"}, "key": {"type": "string"}, "kind": {"type": "string"},
                           "what": {"type": "string"}, "how": {"type": "string"}}}}},
}


def _value_schema(spec: FieldSpec, kind: FieldType) -> dict[str, Any]:
    if kind is FieldType.STRING:
        return {"type": "string", "maxLength": spec.length or 255}
    if kind is FieldType.CHOICE:
        return {"type": "string", "enum": list(spec.choice_values())}
    if kind is FieldType.MULTICHOICE:
        return {"type": "array", "items": {"type": "string", "enum": list(spec.choice_values())}}
    return dict(_SIMPLE.get(kind, {"type": "string"}))


def field_schema(spec: FieldSpec, *, for_input: bool) -> dict[str, Any]:
    kind = spec.value_type
    schema = _value_schema(spec, kind)
    if for_input and kind is FieldType.MONEY:
        schema = {"oneOf": [{"type": "number"}, DECIMAL, {"type": "object", "required": ["amount"], "properties": {
            "amount": {"type": ["number", "string"]}, "currency": {"type": "string"}}}]}
    elif for_input and kind is FieldType.DECIMAL:
        schema = {"type": ["number", "string"]}
    schema["title"] = spec.label.text("en")
    description = spec.label.text("zh")
    if spec.help.texts:
        description += " — " + spec.help.text("en")
    schema["description"] = description
    if spec.type is FieldType.COMPUTED:
        schema["readOnly"] = True
    if kind is not FieldType.JSON:
        schema = {"anyOf": [schema, {"type": "null"}]} if not for_input or not spec.is_required else schema
    return schema


def _entity_schemas(entity: EntitySpec) -> dict[str, Any]:
    system = {"id": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
              "updated_at": {"type": "string", "format": "date-time"},
              "created_by": {"type": ["integer", "null"]}, "owner": {"type": ["integer", "null"]},
              "version": {"type": "integer"}}
    output: dict[str, Any] = {"type": "object", "properties": {
        **system, **{spec.name: field_schema(spec, for_input=False) for spec in entity.fields}}}
    if entity.dedup is not None:
        output["properties"]["duplicate_of"] = {"type": ["integer", "null"]}
    writable = [spec for spec in entity.fields if spec.type is not FieldType.COMPUTED]
    input_: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": {"owner": {"type": ["integer", "null"]},
                                             **{spec.name: field_schema(spec, for_input=True) for spec in writable}}}
    create = dict(input_)
    required = [spec.name for spec in writable if spec.is_required and spec.default is None
                and spec.default_expression is None]
    if required:
        create["required"] = required
    patch = {**input_, "properties": {**input_["properties"], "version": {"type": "integer"}}}
    name = entity.name.capitalize()
    return {name: output, f"{name}Create": create, f"{name}Patch": patch,
            f"{name}Page": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                "total": {"type": "integer", "description": "matching records, counted up to 10,000"},
                "total_exact": {"type": "boolean", "description": "false: more than `total` match (10,000+)"},
                "page": {"type": "integer"}, "per_page": {"type": "integer"},
                "pages": {"type": "integer", "description": "pages, or past 10,000 records the last one known"},
                "has_more": {"type": "boolean", "description": "a next page exists"}}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "malformed request", 404: "no such record", 413: "too large (body, file, or the uploader's quota)", 409: "version conflict, duplicate or still linked",
             422: "invalid input: every bad field is listed (code stage_requirements: the stage move is refused, "
                  "`missing` lists every missing item with what it asks and how to satisfy it)"}
    return {str(status): _json("#/components/schemas/Error", words[status]) for status in statuses}


def _entity_paths(entity: EntitySpec) -> dict[str, Any]:
    name = entity.name.capitalize()
    ref = f"#/components/schemas/{name}"
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    filters = [{"name": spec_name, "in": "query", "required": False, "schema": {"type": "string"},
                "description": f"equals; also {spec_name}__in, __gte, __lte, __gt, __lt, __ne, __contains, __isnull"}
               for spec_name in ("id", "owner", *entity.field_names())]
    paging = [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
              for n, t, d in (("q", "string", "free-text search"), ("sort", "string", "e.g. -created_at,name"),
                              ("page", "integer", "1-based page"), ("per_page", "integer", "rows per page (≤ 500)"),
                              ("fields", "string", "comma-separated fields each item carries besides its id, "
                                                   "e.g. name,phone,owner; * for every field (default: id, "
                                                   "version, the title field and the list view's columns)"),
                              ("view", "string", "a list view: its condition limits the items, its columns "
                                                 "are the default fields"))]
    tag = [entity.name]
    return {
        f"/api/{entity.name}": {
            "get": {"tags": tag, "summary": f"List {entity.plural.text('en')}", "operationId": f"list_{entity.name}",
                    "parameters": paging + filters,
                    "responses": {"200": _json(f"#/components/schemas/{name}Page", "one page"), **_errors(422)}},
            "post": {"tags": tag, "summary": f"Create a {entity.label.text('en')}", "operationId": f"create_{entity.name}",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": f"#/components/schemas/{name}Create"}}}},
                     "responses": {"201": _json(ref, "created"),
                                   "200": _json(ref, "merged into an existing duplicate"),
                                   **_errors(400, 409, 422)}},
        },
        f"/api/{entity.name}/{{record_id}}": {
            "parameters": [record_id],
            "get": {"tags": tag, "summary": f"Read a {entity.label.text('en')}", "operationId": f"get_{entity.name}",
                    "responses": {"200": _json(ref, "the record"), **_errors(404)}},
            "patch": {"tags": tag, "summary": f"Change a {entity.label.text('en')}",
                      "operationId": f"update_{entity.name}",
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"$ref": f"#/components/schemas/{name}Patch"}}}},
                      "responses": {"200": _json(ref, "the changed record"), **_errors(400, 404, 409, 422)}},
            "delete": {"tags": tag, "summary": f"Delete a {entity.label.text('en')}",
                       "operationId": f"delete_{entity.name}",
                       "responses": {"204": {"description": "deleted"}, **_errors(404, 409)}},
        },
        f"/api/{entity.name}/{{record_id}}/transition": {
            "parameters": [record_id],
            "post": {"tags": tag, "summary": "Move the record's stage", "operationId": f"transition_{entity.name}",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["to"], "properties": {
                             "to": {"type": "string"}, "field": {"type": "string"}, "version": {"type": "integer"}}}}}},
                     "responses": {"200": _json(ref, "the moved record"), **_errors(404, 409, 422)}},
        },
        f"/api/{entity.name}/{{record_id}}/events": {
            "parameters": [record_id],
            "get": {"tags": tag, "summary": "The record's change history", "operationId": f"events_{entity.name}",
                    "responses": {"200": {"description": "events, oldest first", "content": {"application/json": {
                        "schema": {"type": "object"}}}}, **_errors(404)}},
        },
    }


_OBJECT = {"type": "object"}


def _funnel_paths(model: Metamodel, entity: EntitySpec) -> dict[str, Any]:
    """The funnel outlook of a record in a funnel, and its approval requests."""
    tag = [entity.name]
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    paths: dict[str, Any] = {}
    if model.funnel_for(entity.name) is not None:
        paths[f"/api/{entity.name}/{{record_id}}/funnel"] = {"parameters": [record_id], "get": {
            "tags": tag, "summary": "Where the record stands in its funnel: stages, the next stage's requirements "
                                    "(met or not, and how to satisfy them), guidance and talk tracks",
            "operationId": f"funnel_{entity.name}", "responses": {"200": {"description": "the outlook", "content": {
                "application/json": {"schema": _OBJECT}}}, **_errors(404)}}}
    names = [spec.name for spec in model.approvals_for(entity.name)]
    if names:
        paths[f"/api/{entity.name}/{{record_id}}/approvals/{{approval}}"] = {"parameters": [record_id, {
            "name": "approval", "in": "path", "required": True, "schema": {"enum": names}}], "post": {
            "tags": tag, "summary": "Request an approval for the record", "operationId": f"request_approval_{entity.name}",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string"}}}}}},
            "responses": {"201": _json("#/components/schemas/Approval", "the request"), **_errors(404, 409)}}}
    if entity.name == "approval_task":
        paths["/api/approval_task/{record_id}/decide"] = {"parameters": [record_id], "post": {
            "tags": tag, "summary": "Approve or reject the task (its approver; a rejection needs a comment)",
            "operationId": "decide_approval_task", "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object", "required": ["decision"], "properties": {
                    "decision": {"enum": ["approve", "reject"]}, "comment": {"type": "string"},
                    "version": {"type": "integer"}}}}}},
            "responses": {"200": _json("#/components/schemas/Approval_task", "the decided task"),
                          **_errors(404, 409, 422)}}}
    return paths


_FILE = {"type": "object", "required": ["id", "name", "content_type", "size", "sha256"], "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "content_type": {"type": "string"},
    "size": {"type": "integer"}, "sha256": {"type": "string"}}}


def _file_paths() -> dict[str, Any]:
    """Uploads (kept for attachment fields) and downloads (for whoever may read an owning record)."""
    return {
        "/api/files": {"post": {
            "tags": ["files"], "summary": "Upload a file (multipart field 'file'; within the uploader's quota)",
            "operationId": "upload_file",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {"file": {"type": "string",
                                                                                "format": "binary"}}}}}},
            "responses": {"201": _json("#/components/schemas/File", "stored; put its id in an attachment field"),
                          **_errors(413, 422)}}},
        "/api/files/{file_id}": {"parameters": [{"name": "file_id", "in": "path", "required": True,
                                                 "schema": {"type": "integer"}}], "get": {
            "tags": ["files"], "summary": "Download a file: its uploader, or anyone who may read a record it is "
                                          "attached to; always Content-Disposition: attachment unless ?inline=1 "
                                          "and an image, PDF or plain text",
            "operationId": "download_file",
            "parameters": [{"name": "inline", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file's bytes", "content": {"*/*": {"schema": {
                "type": "string", "format": "binary"}}}}, **_errors(404)}}},
    }


def build_openapi(model: Metamodel) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every entity's routes. Every operation also documents the
    answers any request may get (401 without credentials, 403 out of scope, 413 too large, 429
    throttled) as its `default` Error response, and the two ways to authenticate."""
    schemas: dict[str, Any] = {"Error": ERROR, "File": _FILE}
    paths: dict[str, Any] = {}
    for entity in model.entities:
        schemas.update(_entity_schemas(entity))
        paths.update(_entity_paths(entity))
        paths.update(_funnel_paths(model, entity))
    paths.update(_file_paths())
    for item in paths.values():
        for method, operation in item.items():
            if method != "parameters":
                operation["responses"].setdefault("default", _json("#/components/schemas/Error", "refused: 401 "
                                                  "sign in, 403 outside your permissions, 413 too large, 429 "
                                                  "too many requests"))
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{model.label.text('en')} API", "version": "1",
                 "description": "Generated from the blueprint. Errors are JSON {code, message, field}."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token: `crm token create`"},
            "session": {"type": "apiKey", "in": "cookie", "name": "crm_session"}}},
        "security": [{"bearer": []}, {"session": []}],
    }
