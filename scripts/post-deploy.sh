#!/usr/bin/env bash
# azd postdeploy hook: subscribe the deployed functions to Event Grid.
#
# Why after deployment: a webhook subscription carries a function's system key (blobs_extension,
# eventgrid_extension), and those keys exist only once the code is deployed and its functions are indexed.
# Event Grid also validates the webhook when the subscription is created, so the function must answer.
#
# Dead-lettering: the storage account takes no shared keys, so Event Grid dead-letters with the identity of each
# system topic (system-assigned, with Storage Blob Data Contributor on the dead-letter container; both come from
# infra/). `az eventgrid system-topic event-subscription create` has no dead-letter identity options, so the
# subscriptions are created with `az eventgrid event-subscription create` on the event source (the storage
# account, the workspace), which puts them on that source's one system topic; the script then reads each back
# from the system topic to check that it is there and dead-letters with the topic's identity.
# Event Grid uses that identity only when it dead-letters an event (after the retries below), so the role
# assignments made by `azd provision` need not have propagated when this runs.
#
# Idempotent: `event-subscription create` creates or updates. Run it again any time:
#   ./scripts/post-deploy.sh
set -euo pipefail

values="$(azd env get-values)"

# azd_value NAME: one value from the azd environment, or a clear error.
azd_value() {
  local value
  value="$(printf '%s\n' "$values" | sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" | head -n 1)"
  if [ -z "$value" ]; then
    echo "error: $1 is not set in the azd environment; run 'azd provision' first." >&2
    exit 1
  fi
  printf '%s' "$value"
}

subscription="$(azd_value AZURE_SUBSCRIPTION_ID)"
app_group="$(azd_value AZURE_RESOURCE_GROUP)"
app_name="$(azd_value AZURE_FUNCTION_APP_NAME)"
app_host="$(azd_value AZURE_FUNCTION_APP_HOSTNAME)"
storage_id="$(azd_value STORAGE_ACCOUNT_ID)"
storage_topic="$(azd_value STORAGE_TOPIC_NAME)"
datasets="$(azd_value DATASETS_CONTAINER)"
deadletter="$(azd_value DEADLETTER_CONTAINER)"
workspace_id="$(azd_value WORKSPACE_ID)"
workspace_group="$(azd_value WORKSPACE_RESOURCE_GROUP)"
workspace_topic="$(azd_value WORKSPACE_TOPIC_NAME)"

# The container resource the topics' identities hold their role on.
deadletter_container_id="$storage_id/blobServices/default/containers/$deadletter"

attempts="${POST_DEPLOY_KEY_ATTEMPTS:-8}"
wait_s="${POST_DEPLOY_KEY_WAIT_S:-15}"

# system_key NAME: the function app's system key, waiting (8 x 15 s by default) for the host to index.
system_key() {
  local key="" attempt
  for attempt in $(seq 1 "$attempts"); do
    key="$(az functionapp keys list --subscription "$subscription" -g "$app_group" -n "$app_name" \
      --query "systemKeys.$1" -o tsv || true)"
    if [ -n "$key" ]; then
      printf '%s' "$key"
      return 0
    fi
    if [ "$attempt" -lt "$attempts" ]; then
      echo "  waiting for system key $1 (attempt $attempt/$attempts)..." >&2
      sleep "$wait_s"
    fi
  done
  echo "error: the function app $app_name has no system key $1." >&2
  echo "  Its functions are not indexed yet (or failed to index): check the app's logs in Application" >&2
  echo "  Insights, then run scripts/post-deploy.sh again." >&2
  exit 1
}

# check_on_topic GROUP TOPIC NAME: the subscription NAME is on system topic TOPIC and dead-letters with its identity.
check_on_topic() {
  local identity
  identity="$(az eventgrid system-topic event-subscription show --subscription "$subscription" \
    --resource-group "$1" --system-topic-name "$2" --name "$3" \
    --query deadLetterWithResourceIdentity.identity.type --output tsv || true)"
  if [ "$identity" != "SystemAssigned" ]; then
    echo "error: event subscription $3 is not on system topic $2 (resource group $1), or it does not" >&2
    echo "  dead-letter with the topic's identity. Check the topic with" >&2
    echo "  'az eventgrid system-topic show -g $1 -n $2', run 'azd provision', then this script again." >&2
    exit 1
  fi
}

# subscribe GROUP TOPIC NAME SOURCE_ID ENDPOINT [FILTER_OPTION ...]: create (or update) the webhook subscription NAME
# on the event source SOURCE_ID, with its own filter options, dead-lettering with the identity of the source's system
# topic, then check that it is on that topic (TOPIC, in resource group GROUP).
subscribe() {
  local group="$1" topic="$2" name="$3" source_id="$4" endpoint="$5"
  shift 5
  az eventgrid event-subscription create \
    --subscription "$subscription" \
    --source-resource-id "$source_id" \
    --name "$name" \
    --endpoint-type webhook \
    --endpoint "$endpoint" \
    "$@" \
    --deadletter-identity systemassigned \
    --deadletter-identity-endpoint "$deadletter_container_id" \
    --max-delivery-attempts 30 \
    --event-ttl 1440 \
    --output none
  check_on_topic "$group" "$topic" "$name"
}

echo "Subscribing functions of $app_name to Event Grid"

echo "- reading the blobs_extension system key"
blobs_key="$(system_key blobs_extension)"
echo "- storage topic $storage_topic -> on_dataset_uploaded (container $datasets)"
subscribe "$app_group" "$storage_topic" datasets-to-on-dataset-uploaded "$storage_id" \
  "https://$app_host/runtime/webhooks/blobs?functionName=Host.Functions.on_dataset_uploaded&code=$blobs_key" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/$datasets/"

echo "- reading the eventgrid_extension system key"
eventgrid_key="$(system_key eventgrid_extension)"
echo "- workspace topic $workspace_topic -> on_job_event (pipeline jobs)"
subscribe "$workspace_group" "$workspace_topic" jobs-to-on-job-event "$workspace_id" \
  "https://$app_host/runtime/webhooks/eventgrid?functionName=on_job_event&code=$eventgrid_key" \
  --included-event-types Microsoft.MachineLearningServices.RunCompleted Microsoft.MachineLearningServices.RunStatusChanged \
  --advanced-filter data.runType StringIn azureml.PipelineRun

echo "Done: uploads to container '$datasets' start runs; Azure ML job events reach on_job_event."
echo "Undeliverable events land in container '$deadletter', written by each topic's own identity."
