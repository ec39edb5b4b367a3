"""The azd template (azure.yaml, infra/, scripts/post-deploy.*) against the app it deploys. Offline: no Bicep CLI,
no az, no azd. The Bicep is read as text; the post-deploy script runs against fake `azd` and `az` commands."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from pydantic import AliasChoices, TypeAdapter

from shared.api.events import PIPELINE_RUN, RUN_COMPLETED, RUN_STATUS_CHANGED
from shared.settings import STORAGE_CONNECTION_SETTING, Settings
from tests.registered import bindings, names

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
SH = ROOT / "scripts" / "post-deploy.sh"
PS1 = ROOT / "scripts" / "post-deploy.ps1"

ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "43d0d8ad-25c7-4714-9337-8ba259a9fe05": "Monitoring Reader",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
REQUIRED_ROLES = set(ROLES)  # Storage Blob Data Contributor too: the topics dead-letter with it

# Settings the Functions host reads (storage connections, telemetry), not the app's own Settings.
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    f"{STORAGE_CONNECTION_SETTING}__queueServiceUri",
    f"{STORAGE_CONNECTION_SETTING}__credential",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
REQUIRED_SETTINGS = HOST_SETTINGS | {
    f"{STORAGE_CONNECTION_SETTING}__blobServiceUri",
    f"{STORAGE_CONNECTION_SETTING}__clientId",
    "AUTOPILOT_ENGINE",
    "AZURE_CLIENT_ID",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZUREML_WORKSPACE_NAME",
    "AZUREML_COMPUTE",
    "AZUREML_DATASTORE",
    "BASE_MODEL_ID",
    "AZUREML_PIPELINE_VERSION",
    "AZUREML_INFERENCE_INSTANCE_TYPE",
    "DATASETS_CONTAINER",
    "RUNS_CONTAINER",
    "GATE_REQUIRE_BASE_EVAL",
    "IDLE_MINUTES",
    "IDLE_SWEEP_SCHEDULE",
}
# Values azd itself keeps in the environment (not outputs of main.bicep).
AZD_OWN_VALUES = {"AZURE_SUBSCRIPTION_ID", "AZURE_ENV_NAME", "AZURE_LOCATION"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def _params(bicep: str) -> dict[str, str | None]:
    """param name -> its default expression, or None when it has none (required)."""
    return {
        match["name"]: match["default"]
        for match in re.finditer(r"^param\s+(?P<name>\w+)\s+\w+(?:\s*=\s*(?P<default>.+))?$", bicep, re.M)
    }


def _outputs(bicep: str) -> set[str]:
    return set(re.findall(r"^output\s+(\w+)\s", bicep, re.M))


def _var(bicep: str, name: str) -> str:
    match = re.search(rf"^var\s+{name}\s*=\s*'([^']*)'$", bicep, re.M)
    assert match, f"var {name} not found"
    return match[1]


def _block(text: str, opener: str) -> str:
    """The text of the brace block that `opener` (ending in '{') starts, up to its matching brace."""
    start = text.index(opener) + len(opener)
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    raise AssertionError(f"unbalanced block after {opener!r}")


def _keys(block: str) -> dict[str, str]:
    """The `Name: value` lines of a flat Bicep object."""
    return {
        match["key"]: match["value"].strip()
        for match in re.finditer(r"^\s*(?P<key>[A-Za-z_][\w]*)\s*:\s*(?P<value>.+)$", block, re.M)
    }


def _app_settings() -> tuple[dict[str, str], dict[str, str]]:
    """(settings passed by main.bicep, settings added by the function module)."""
    from_main = _keys(_block(_text(MAIN), "appSettings: {"))
    from_module = _keys(_block(_text(INFRA / "app" / "function.bicep"), "properties: union(appSettings, {"))
    return from_main, from_module


def _setting_aliases() -> dict[str, str]:
    """App setting name -> Settings field, for every name the app reads."""
    aliases: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        if field.alias:
            aliases[field.alias] = field_name
        if isinstance(field.validation_alias, AliasChoices):
            aliases.update({str(choice): field_name for choice in field.validation_alias.choices})
        elif isinstance(field.validation_alias, str):
            aliases[field.validation_alias] = field_name
    return aliases


def _script_reads(path: Path, call: str) -> list[str]:
    """The names passed to the script's azd value reader at its call sites (`call` ends where the name starts)."""
    return re.findall(rf"{call}([A-Z_][A-Z0-9_]*)", _text(path))


def _resources(bicep: str) -> dict[str, tuple[str, str]]:
    """symbolic name -> (type@version, body) of every single (not looped) resource, `existing` ones included."""
    found = {}
    for match in re.finditer(r"^resource\s+(\w+)\s+'([^']+)'(?:\s+existing)?\s*=\s*\{", bicep, re.M):
        found[match[1]] = (match[2], _block(bicep[match.start() :], match[0]))
    return found


def _output_values(bicep: str) -> dict[str, str]:
    """output name -> its expression."""
    return dict(re.findall(r"^output\s+(\w+)\s+\w+\s*=\s*(.+)$", bicep, re.M))


def _guid_arguments(bicep: str) -> list[list[str]]:
    """The top-level arguments of each `name: guid(...)`."""
    calls = []
    for match in re.finditer(r"name: guid\(", bicep):
        depth, arguments, current = 1, [], ""
        for char in bicep[match.end() :]:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 or (depth == 1 and char == ","):
                arguments.append(current.strip())
                current = ""
                if depth == 0:
                    break
            else:
                current += char
        calls.append(arguments)
    return calls


def test_azure_yaml_names_one_python_function_service_at_the_root() -> None:
    # Given the azd project file
    project = yaml.safe_load(_text(ROOT / "azure.yaml"))

    # When its services are read
    services = project["services"]

    # Then there is one, this folder as a Python function app, tagged as the Bicep tags the site
    assert len(services) == 1
    [(service_name, service)] = services.items()
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert f"'azd-service-name': '{service_name}'" in _text(MAIN)


def test_hooks_run_scripts_that_exist() -> None:
    # Given the postdeploy hooks of azure.yaml
    hooks = yaml.safe_load(_text(ROOT / "azure.yaml"))["hooks"]["postdeploy"]

    # When their scripts are looked up
    posix, windows = ROOT / hooks["posix"]["run"], ROOT / hooks["windows"]["run"]

    # Then both exist, and azd can execute the posix one directly (it honours the shebang)
    assert (hooks["posix"]["shell"], hooks["windows"]["shell"]) == ("sh", "pwsh")
    assert (posix, windows) == (SH, PS1)
    assert posix.is_file() and windows.is_file()
    assert posix.stat().st_mode & stat.S_IXUSR
    assert _text(posix).startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in _text(posix)


def test_parameter_file_sets_only_declared_params_and_every_required_one() -> None:
    # Given the parameters azd substitutes and the params main.bicep declares
    given = json.loads(_text(INFRA / "main.parameters.json"))["parameters"]
    declared = _params(_text(MAIN))

    # When they are compared
    undeclared = set(given) - set(declared)
    required = {name for name, default in declared.items() if default is None}

    # Then nothing is set that Bicep would reject, and nothing required is left for azd to prompt
    assert undeclared == set()
    assert required - set(given) == set()
    assert {"environmentName", "location", "workspaceName", "workspaceResourceGroupName"} <= required
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["workspaceName"]["value"] == "${AZUREML_WORKSPACE_NAME}"
    assert given["workspaceResourceGroupName"]["value"] == "${AZUREML_RESOURCE_GROUP}"
    # the base model defaults to the app's own (a current fine-tunable model), so azd does not prompt for it
    assert given["baseModelId"]["value"] == f"${{BASE_MODEL_ID={Settings.model_fields['base_model_id'].default}}}"


def test_parameter_defaults_agree_with_bicep_and_the_app() -> None:
    # Given the ${NAME=default} entries of the parameter file
    given = json.loads(_text(INFRA / "main.parameters.json"))["parameters"]
    declared = _params(_text(MAIN))
    aliases = _setting_aliases()
    defaulted = {param: re.fullmatch(r"\$\{(\w+)=(.*)\}", entry["value"]) for param, entry in given.items()}
    defaulted = {param: match for param, match in defaulted.items() if match}

    # When each default is compared with the Bicep default and the app's own default for that setting
    assert defaulted, "no defaults found"
    for param, match in defaulted.items():
        variable, default = match[1], match[2]
        field = Settings.model_fields[aliases[variable]]

        # Then all three agree
        assert declared[param] == f"'{default}'", param
        # with the field's own validators (an empty setting may mean "unset")
        setting = TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation)
        assert setting.validate_python(default) == field.default, variable

    # And the sweep schedule's default, kept in Bicep, is the app's
    fallback = re.search(r"empty\(idleSweepSchedule\) \? '([^']+)'", _text(MAIN))
    assert fallback and fallback[1] == Settings.model_fields["idle_sweep_schedule"].default


def test_app_settings_are_the_apps_settings_and_the_required_ones_are_set() -> None:
    # Given the app settings the Bicep writes
    from_main, from_module = _app_settings()
    written = set(from_main) | set(from_module)

    # When they are checked against the app's Settings aliases
    aliases = _setting_aliases()
    unknown = {name for name in written if name not in aliases and name not in HOST_SETTINGS}

    # Then each is a setting the app (or the host) reads, none is set twice, the required ones are all there,
    # and none that Flex Consumption rejects
    assert unknown == set()
    assert set(from_main) & set(from_module) == set()
    assert REQUIRED_SETTINGS - written == set()
    assert {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & written == set()


def test_app_setting_values_that_are_fixed() -> None:
    # Given the app settings the Bicep writes
    from_main, from_module = _app_settings()
    main = _text(MAIN)

    # Then the engine is Azure ML, the gate does not wait for a base-model eval Azure's pipeline never makes,
    # Azure ML is addressed in the WORKSPACE's resource group, and every identity setting names the app's identity
    assert from_main["AUTOPILOT_ENGINE"] == "'azureml'"
    assert from_main["GATE_REQUIRE_BASE_EVAL"] == "'false'"
    assert TypeAdapter(bool).validate_python("false") is False
    assert from_main["AZURE_RESOURCE_GROUP"] == "workspaceResourceGroupName"
    assert from_main["DATASETS_CONTAINER"] == "datasetsContainer"
    assert from_main["RUNS_CONTAINER"] == "runsContainer"
    assert _var(main, "datasetsContainer") == Settings.model_fields["datasets_container"].default
    assert _var(main, "runsContainer") == Settings.model_fields["runs_container"].default
    assert from_module["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert from_module[f"{STORAGE_CONNECTION_SETTING}__credential"] == "'managedidentity'"
    for name in ("AzureWebJobsStorage__clientId", f"{STORAGE_CONNECTION_SETTING}__clientId", "AZURE_CLIENT_ID"):
        assert from_module[name] == "identityClientId", name
    assert from_module["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "'ClientId=${identityClientId};Authorization=AAD'"
    )


def test_every_binding_expression_and_connection_resolves_to_a_written_setting() -> None:
    # Given the settings the Bicep writes and the app's registered functions
    from_main, from_module = _app_settings()
    written = set(from_main) | set(from_module)

    # When the %NAME% expressions and connections of every binding are collected
    expressions: set[str] = set()
    connections: set[str] = set()
    for function_name in names():
        for binding in bindings(function_name):
            for value in binding.values():
                if isinstance(value, str):
                    expressions.update(re.findall(r"%(\w+)%", value))
            if binding.get("connection"):
                connections.add(binding["connection"])

    # Then the host can resolve each (an unresolved %NAME% stops the function from indexing)
    assert {"DATASETS_CONTAINER", "IDLE_SWEEP_SCHEDULE"} <= expressions
    assert expressions - written == set()
    assert connections == {STORAGE_CONNECTION_SETTING}
    connection = STORAGE_CONNECTION_SETTING
    assert {f"{connection}__blobServiceUri", f"{connection}__queueServiceUri"} <= written


def test_role_definitions_are_known_and_assignments_are_deterministic() -> None:
    # Given every Bicep file
    found: set[str] = set()
    for path in _bicep_files():
        text = _text(path)

        # When its role GUIDs and role assignments are read
        found.update(re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", text))
        assignments = text.count("'Microsoft.Authorization/roleAssignments@")
        named = _guid_arguments(text)

        # Then each assignment is named guid(scope, principal, role)
        assert len(named) == assignments, path.name
        for scope, principal, role in named:
            assert scope.endswith(".id") and "PrincipalId" in principal and role in text, (path.name, scope)

    # And every GUID is a role we know, and every role the app needs is there
    assert found - set(ROLES) == set()
    assert REQUIRED_ROLES - found == set(), [ROLES[guid] for guid in REQUIRED_ROLES - found]


def test_resources_have_the_shape_the_app_needs() -> None:
    # Given the Bicep modules
    app = INFRA / "app"
    function, storage = _text(app / "function.bicep"), _text(app / "storage.bicep")
    monitoring, workspace, main = _text(app / "monitoring.bicep"), _text(app / "workspace.bicep"), _text(MAIN)

    # Then the app is on Flex Consumption with Python 3.11 and deploys from blob storage with its identity
    for snippet in (
        "name: 'FC1'",
        "tier: 'FlexConsumption'",
        "reserved: true",
        "kind: 'functionapp,linux'",
        "type: 'blobContainer'",
        "type: 'UserAssignedIdentity'",
        "instanceMemoryMB: 2048",
        "name: 'python'",
        "version: '3.11'",
        "type: 'UserAssigned'",
    ):
        assert snippet in function, snippet
    # And storage takes no keys, telemetry no keys, and both topics watch the right sources
    for snippet in (
        "allowSharedKeyAccess: false",
        "minimumTlsVersion: 'TLS1_2'",
        "topicType: 'Microsoft.Storage.StorageAccounts'",
    ):
        assert snippet in storage, snippet
    assert "DisableLocalAuth: true" in monitoring
    for snippet in (
        "topicType: 'Microsoft.MachineLearningServices.Workspaces'",
        "datastoreType: 'AzureBlob'",
        "credentialsType: 'None'",
        "containerName: datasetsContainer",
    ):
        assert snippet in workspace, snippet
    # And the containers are the app's
    containers = re.search(r"containers: \[([^\]]*)\]", main)
    assert containers and containers[1].split(", ") == [
        "deploymentContainer",
        "datasetsContainer",
        "runsContainer",
        "deadLetterContainer",
    ]
    assert _var(main, "deadLetterContainer") == "deadletter"


def test_both_system_topics_have_a_system_assigned_identity_and_publish_its_principal() -> None:
    # Given the two Event Grid system topics: the storage account's and the workspace's
    topics = {
        module: _resources(_text(INFRA / "app" / f"{module}.bicep"))["topic"] for module in ("storage", "workspace")
    }

    for module, (type_version, body) in topics.items():
        # When the topic's resource type, identity and outputs are read
        identity = _keys(_block(body, "identity: {"))
        outputs = _output_values(_text(INFRA / "app" / f"{module}.bicep"))

        # Then it is a system topic at an API version whose systemTopics schema has `identity` (2022-06-15 is
        # documented with it), its identity is system-assigned, and the module outputs that identity's principal
        assert type_version == "Microsoft.EventGrid/systemTopics@2022-06-15", module
        assert identity == {"type": "'SystemAssigned'"}, module
        assert outputs["topicPrincipalId"] == "topic.identity.principalId", module


def test_each_topic_identity_is_storage_blob_data_contributor_on_the_dead_letter_container_only() -> None:
    # Given the role assignments of the app's resource group, where the storage account is, and how main.bicep
    # feeds that module
    rbac = _text(INFRA / "app" / "rbac.bicep")
    resources = _resources(rbac)
    main = _text(MAIN)
    passed = _keys(_block(_block(main, "module rbac 'app/rbac.bicep' = {"), "params: {"))

    # When the dead-letter container and the assignments for each topic's principal are looked up
    container_type, container = resources["deadLetter"]
    blob_service_type, blob_service = resources["blobService"]
    assignments = {
        principal: [
            body
            for type_version, body in resources.values()
            if type_version == "Microsoft.Authorization/roleAssignments@2022-04-01"
            and _keys(_block(body, "properties: {"))["principalId"] == principal
        ]
        for principal in ("storageTopicPrincipalId", "workspaceTopicPrincipalId")
    }

    # Then the scope is the existing container named by main.bicep's dead-letter container, under the account's
    # `default` blob service
    assert container_type == "Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01"
    assert _keys(container) == {"parent": "blobService", "name": "deadLetterContainer"}
    assert blob_service_type == "Microsoft.Storage/storageAccounts/blobServices@2023-05-01"
    assert _keys(blob_service) == {"parent": "storage", "name": "'default'"}
    assert passed["deadLetterContainer"] == "deadLetterContainer"
    assert _var(main, "deadLetterContainer") == "deadletter"
    # And each topic's principal, passed in from the module that made the topic, has exactly one assignment:
    # Storage Blob Data Contributor on that container, as a service principal, under a deterministic name
    assert passed["storageTopicPrincipalId"] == "storage.outputs.topicPrincipalId"
    assert passed["workspaceTopicPrincipalId"] == "workspace.outputs.topicPrincipalId"
    assert _var(rbac, "storageBlobDataContributor") == STORAGE_BLOB_DATA_CONTRIBUTOR
    assert ROLES[STORAGE_BLOB_DATA_CONTRIBUTOR] == "Storage Blob Data Contributor"
    for principal, found in assignments.items():
        assert len(found) == 1, principal
        [body] = found
        assert _keys(body)["scope"] == "deadLetter", principal
        assert _keys(body)["name"] == f"guid(deadLetter.id, {principal}, storageBlobDataContributor)", principal
        assert _keys(_block(body, "properties: {")) == {
            "roleDefinitionId": (
                "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)"
            ),
            "principalId": principal,
            "principalType": "'ServicePrincipal'",
        }, principal


def test_main_outputs_the_event_sources_the_post_deploy_scripts_subscribe_to() -> None:
    # Given main.bicep's outputs and the workspace module's
    main = _output_values(_text(MAIN))
    workspace = _output_values(_text(INFRA / "app" / "workspace.bicep"))

    # Then the scripts get the storage account's and the workspace's resource ids (the event sources) and the
    # names of their topics
    assert main["STORAGE_ACCOUNT_ID"] == "storage.outputs.id"
    assert main["WORKSPACE_ID"] == "workspace.outputs.id"
    assert workspace["id"] == "workspace.id"
    assert main["STORAGE_TOPIC_NAME"] == "storage.outputs.topicName"
    assert main["WORKSPACE_TOPIC_NAME"] == "workspace.outputs.topicName"


def _unbalanced(bicep: str) -> str | None:
    """The first bracket problem of a Bicep text, outside strings and comments; None when balanced."""
    pairs, stack, position = {")": "(", "]": "[", "}": "{"}, [], 0
    while position < len(bicep):
        char = bicep[position]
        if bicep.startswith("//", position):
            newline = bicep.find("\n", position)
            position = len(bicep) if newline < 0 else newline
            continue
        if char == "'":
            end = position + 1
            while end < len(bicep) and bicep[end] != "'":
                end += 2 if bicep[end] == "\\" else 1
            if end >= len(bicep) or "\n" in bicep[position:end]:
                return f"unterminated string at {position}"
            position = end + 1
            continue
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return f"unexpected {char!r} at {position}"
        position += 1
    return f"unclosed {stack[-1]!r}" if stack else None


def test_bicep_files_have_balanced_brackets_and_closed_strings() -> None:
    # Given every Bicep file (there is no Bicep CLI here to compile them)
    files = _bicep_files()

    # When each is scanned for brackets outside strings and comments
    problems = {path.name: _unbalanced(_text(path)) for path in files}

    # Then none is broken, and the scanner does find a broken one
    assert len(files) == 7
    assert {name: problem for name, problem in problems.items() if problem} == {}
    assert _unbalanced("param a object = {\n  b: 'c'\n") == "unclosed '{'"
    assert _unbalanced("var a = 'b\n") is not None


def test_module_paths_exist() -> None:
    # Given every `module x 'path'` of every Bicep file
    references = [
        (path, reference)
        for path in _bicep_files()
        for reference in re.findall(r"^module\s+\w+\s+'([^']+)'", _text(path), re.M)
    ]

    # Then each names a file beside the referring one
    assert len(references) == 6
    missing = [f"{path.name} -> {ref}" for path, ref in references if not (path.parent / ref).is_file()]
    assert missing == []


def test_post_deploy_scripts_read_only_outputs_of_main_bicep() -> None:
    # Given the azd values both scripts read
    posix = _script_reads(SH, r"\$\(azd_value ")
    windows = _script_reads(PS1, r"= Get-AzdValue ")

    # Then they read the same ones, and each is an output of main.bicep or one azd keeps itself
    assert len(posix) == 11
    assert set(posix) == set(windows)
    assert set(posix) - _outputs(_text(MAIN)) - AZD_OWN_VALUES == set()


def test_post_deploy_scripts_use_the_same_az_options() -> None:
    # Given the long options and the literal filter values of both scripts
    def options(text: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))

    posix, windows = _text(SH), _text(PS1)

    # Then the Windows script says to az what the posix one says, and neither dead-letters with Event Grid's
    # own identity (it cannot write to an account without shared keys)
    assert options(posix) == options(windows)
    assert "--deadletter-endpoint" not in options(posix) | options(windows)
    assert posix.count("--deadletter-identity systemassigned \\\n") == 1
    assert windows.count("--deadletter-identity systemassigned `\n") == 1
    assert posix.count('--deadletter-identity-endpoint "$deadletter_container_id"') == 1
    assert windows.count("--deadletter-identity-endpoint $deadletterContainerId `") == 1
    assert 'deadletter_container_id="$storage_id/blobServices/default/containers/$deadletter"' in posix
    assert '$deadletterContainerId = "$storageId/blobServices/default/containers/$deadletter"' in windows
    for literal in (
        RUN_COMPLETED,
        RUN_STATUS_CHANGED,
        PIPELINE_RUN,
        "Microsoft.Storage.BlobCreated",
        "functionName=Host.Functions.on_dataset_uploaded&code=",
        "functionName=on_job_event&code=",
        "datasets-to-on-dataset-uploaded",
        "jobs-to-on-job-event",
    ):
        assert literal in posix and literal in windows, literal


# ---- the posix script, run against fake azd and az commands ----------------------------------------------------


@pytest.fixture
def fake_cli(tmp_path: Path) -> dict[str, Path]:
    """`azd env get-values` prints the file FAKE_AZD_VALUES; `az` logs its arguments, answers key queries from
    FAKE_AZ_KEYS and event subscription reads with FAKE_AZ_DEADLETTER_IDENTITY (default SystemAssigned)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    azd = bin_dir / "azd"
    azd.write_text('#!/usr/bin/env bash\n[ "$1 $2" = "env get-values" ] && cat "$FAKE_AZD_VALUES"\n')
    az = bin_dir / "az"
    az.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "with open(os.environ['FAKE_AZ_LOG'], 'a') as log:\n"
        "    log.write(json.dumps(args) + '\\n')\n"
        "if args[:3] == ['functionapp', 'keys', 'list']:\n"
        "    key = args[args.index('--query') + 1].removeprefix('systemKeys.')\n"
        "    print(json.loads(os.environ['FAKE_AZ_KEYS']).get(key, ''))\n"
        "if args[:4] == ['eventgrid', 'system-topic', 'event-subscription', 'show']:\n"
        "    print(os.environ.get('FAKE_AZ_DEADLETTER_IDENTITY', 'SystemAssigned'))\n"
    )
    for tool in (azd, az):
        tool.chmod(0o755)
    return {"bin": bin_dir, "values": tmp_path / "azd-values.env", "log": tmp_path / "az.log"}


def _outputs_as_values() -> dict[str, str]:
    """What `azd env get-values` holds after `azd provision` of main.bicep (fake, but one per output)."""
    main = _text(MAIN)
    values = {name: f"{name.lower().replace('_', '-')}-x" for name in _outputs(main)}
    values.update(
        AZURE_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000001",
        AZURE_FUNCTION_APP_HOSTNAME="func-x.azurewebsites.net",
        STORAGE_ACCOUNT_ID="/subscriptions/s/resourceGroups/rg-dev/providers/Microsoft.Storage/storageAccounts/stx",
        WORKSPACE_ID="/subscriptions/s/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw",
        DATASETS_CONTAINER=_var(main, "datasetsContainer"),
        DEADLETTER_CONTAINER=_var(main, "deadLetterContainer"),
    )
    return values


def _run_post_deploy(
    fake_cli: dict[str, Path], values: dict[str, str], keys: dict[str, str], deadletter_identity: str = "SystemAssigned"
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    fake_cli["values"].write_text("".join(f'{name}="{value}"\n' for name, value in values.items()))
    env = {
        **os.environ,
        "PATH": f"{fake_cli['bin']}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AZ_DEADLETTER_IDENTITY": deadletter_identity,
        "FAKE_AZD_VALUES": str(fake_cli["values"]),
        "FAKE_AZ_LOG": str(fake_cli["log"]),
        "FAKE_AZ_KEYS": json.dumps(keys),
        "POST_DEPLOY_KEY_ATTEMPTS": "2",
        "POST_DEPLOY_KEY_WAIT_S": "0",
    }
    result = subprocess.run([str(SH)], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    log = fake_cli["log"].read_text().splitlines() if fake_cli["log"].exists() else []
    return result, [json.loads(line) for line in log]


def _options(args: list[str]) -> dict[str, list[str]]:
    """--option value [value ...] -> {option: [values]}."""
    parsed: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg.startswith("--"):
            current = arg
            parsed[current] = []
        elif current:
            parsed[current].append(arg)
    return parsed


def test_post_deploy_subscribes_the_apps_functions_with_the_apps_filters(fake_cli: dict[str, Path]) -> None:
    # Given a provisioned environment whose function app has both system keys
    values = _outputs_as_values()
    keys = {"blobs_extension": "blob-key", "eventgrid_extension": "eg-key"}

    # When the post-deploy script runs
    result, calls = _run_post_deploy(fake_cli, values, keys)

    # Then it succeeds and creates exactly two event subscriptions, one on each event source
    assert result.returncode == 0, result.stderr
    creates = [_options(args) for args in calls if args[:3] == ["eventgrid", "event-subscription", "create"]]
    assert len(creates) == 2
    storage, jobs = creates
    datasets = Settings.model_fields["datasets_container"].default

    # And blob uploads to the datasets container go to the blob trigger, through the blobs extension webhook
    assert storage["--source-resource-id"] == [values["STORAGE_ACCOUNT_ID"]]
    assert storage["--name"] == ["datasets-to-on-dataset-uploaded"]
    assert storage["--included-event-types"] == ["Microsoft.Storage.BlobCreated"]
    assert storage["--subject-begins-with"] == [f"/blobServices/default/containers/{datasets}/"]
    blob_url = urlsplit(storage["--endpoint"][0])
    assert (blob_url.scheme, blob_url.netloc, blob_url.path) == (
        "https",
        values["AZURE_FUNCTION_APP_HOSTNAME"],
        "/runtime/webhooks/blobs",
    )
    blob_query = parse_qs(blob_url.query)
    assert blob_query["code"] == ["blob-key"]
    [blob_function] = blob_query["functionName"]
    assert blob_function.startswith("Host.Functions.")
    blob_function = blob_function.removeprefix("Host.Functions.")
    assert blob_function in names()
    [trigger] = [b for b in bindings(blob_function) if b["direction"].lower() == "in" and b["type"] == "blobTrigger"]
    assert trigger["source"] == "EventGrid"

    # And Azure ML pipeline-job events go to the Event Grid trigger, filtered as shared/events.py expects
    assert jobs["--source-resource-id"] == [values["WORKSPACE_ID"]]
    assert jobs["--name"] == ["jobs-to-on-job-event"]
    assert set(jobs["--included-event-types"]) == {RUN_COMPLETED, RUN_STATUS_CHANGED}
    assert jobs["--advanced-filter"] == ["data.runType", "StringIn", PIPELINE_RUN]
    job_url = urlsplit(jobs["--endpoint"][0])
    assert (job_url.netloc, job_url.path) == (values["AZURE_FUNCTION_APP_HOSTNAME"], "/runtime/webhooks/eventgrid")
    job_query = parse_qs(job_url.query)
    assert job_query["code"] == ["eg-key"]
    [job_function] = job_query["functionName"]
    assert job_function in names()
    assert [b["type"] for b in bindings(job_function)] == ["eventGridTrigger"]

    # And both dead-letter to the dead-letter container through their topic's system-assigned identity (never
    # with Event Grid's own, which the keyless account refuses), with an explicit retry policy, in the azd
    # subscription
    for subscription in (storage, jobs):
        assert subscription["--endpoint-type"] == ["webhook"]
        assert subscription["--deadletter-identity"] == ["systemassigned"]
        assert subscription["--deadletter-identity-endpoint"] == [
            "/subscriptions/s/resourceGroups/rg-dev/providers/Microsoft.Storage/storageAccounts/stx"
            "/blobServices/default/containers/deadletter"
        ]
        assert "--deadletter-endpoint" not in subscription
        assert subscription["--max-delivery-attempts"] == ["30"]
        assert subscription["--event-ttl"] == ["1440"]
        assert subscription["--subscription"] == [values["AZURE_SUBSCRIPTION_ID"]]


def test_post_deploy_reads_each_subscription_back_from_its_system_topic(fake_cli: dict[str, Path]) -> None:
    # Given a provisioned environment whose function app has both system keys
    values = _outputs_as_values()
    keys = {"blobs_extension": "blob-key", "eventgrid_extension": "eg-key"}

    # When the post-deploy script runs
    result, calls = _run_post_deploy(fake_cli, values, keys)

    # Then after creating each subscription on its event source, it reads that subscription from the system topic
    # of the source (where the topic identity the Bicep grants the container role to lives) and asks for its
    # dead-letter identity
    assert result.returncode == 0, result.stderr
    eventgrid = [args[:4] for args in calls if args[0] == "eventgrid"]
    assert eventgrid == [
        ["eventgrid", "event-subscription", "create", "--subscription"],
        ["eventgrid", "system-topic", "event-subscription", "show"],
        ["eventgrid", "event-subscription", "create", "--subscription"],
        ["eventgrid", "system-topic", "event-subscription", "show"],
    ]
    shows = [
        _options(args) for args in calls if args[:4] == ["eventgrid", "system-topic", "event-subscription", "show"]
    ]
    assert [(show["--resource-group"], show["--system-topic-name"], show["--name"]) for show in shows] == [
        ([values["AZURE_RESOURCE_GROUP"]], [values["STORAGE_TOPIC_NAME"]], ["datasets-to-on-dataset-uploaded"]),
        ([values["WORKSPACE_RESOURCE_GROUP"]], [values["WORKSPACE_TOPIC_NAME"]], ["jobs-to-on-job-event"]),
    ]
    for show in shows:
        assert show["--query"] == ["deadLetterWithResourceIdentity.identity.type"]
        assert show["--output"] == ["tsv"]
        assert show["--subscription"] == [values["AZURE_SUBSCRIPTION_ID"]]


def test_post_deploy_stops_when_a_subscription_does_not_dead_letter_with_the_topic_identity(
    fake_cli: dict[str, Path],
) -> None:
    # Given a subscription that Event Grid reports without a dead-letter identity (a topic without identity, or
    # the subscription on another topic)
    values = _outputs_as_values()
    keys = {"blobs_extension": "blob-key", "eventgrid_extension": "eg-key"}

    # When the post-deploy script runs
    result, calls = _run_post_deploy(fake_cli, values, keys, deadletter_identity="")

    # Then it stops after the first subscription, naming it, its topic and what to do
    assert result.returncode == 1
    assert (
        f"event subscription datasets-to-on-dataset-uploaded is not on system topic {values['STORAGE_TOPIC_NAME']}"
        f" (resource group {values['AZURE_RESOURCE_GROUP']})"
    ) in result.stderr
    assert "run 'azd provision', then this script again" in result.stderr
    assert sum(args[:3] == ["eventgrid", "event-subscription", "create"] for args in calls) == 1


def test_post_deploy_stops_with_a_clear_error_when_a_system_key_is_missing(fake_cli: dict[str, Path]) -> None:
    # Given a function app whose functions are not indexed yet: no eventgrid_extension key
    values = _outputs_as_values()

    # When the post-deploy script runs
    result, calls = _run_post_deploy(fake_cli, values, {"blobs_extension": "blob-key"})

    # Then it fails after its retries, says which key is missing and why, and creates only what it could
    assert result.returncode == 1
    assert "has no system key eventgrid_extension" in result.stderr
    assert "not indexed yet" in result.stderr
    key_queries = [args for args in calls if args[:3] == ["functionapp", "keys", "list"]]
    assert [args[args.index("--query") + 1] for args in key_queries] == [
        "systemKeys.blobs_extension",
        "systemKeys.eventgrid_extension",
        "systemKeys.eventgrid_extension",
    ]
    assert sum(args[:3] == ["eventgrid", "event-subscription", "create"] for args in calls) == 1


def test_post_deploy_stops_with_a_clear_error_when_not_provisioned(fake_cli: dict[str, Path]) -> None:
    # Given an environment without the storage topic output (never provisioned, or an older template)
    values = _outputs_as_values()
    del values["STORAGE_TOPIC_NAME"]

    # When the post-deploy script runs
    result, calls = _run_post_deploy(fake_cli, values, {})

    # Then it names the missing value and calls az not at all
    assert result.returncode == 1
    assert "STORAGE_TOPIC_NAME is not set in the azd environment" in result.stderr
    assert calls == []


def test_funcignore_keeps_development_files_out_of_the_package() -> None:
    # Given the .funcignore patterns
    patterns = [
        line.strip() for line in _text(ROOT / ".funcignore").splitlines() if line.strip() and not line.startswith("#")
    ]

    # Then the virtual environment, tests and node modules are excluded, and the app itself is not
    assert {".venv", "tests", "node_modules", "local.settings.json", "infra"} <= set(patterns)
    for kept in ("function_app.py", "host.json", "requirements.txt", "shared", "functions"):
        assert not any(fnmatch.fnmatch(kept, pattern) for pattern in patterns), kept
