# azd postdeploy hook (Windows): the same as post-deploy.sh. Subscribes the deployed functions to Event Grid.
# It runs after deployment because the webhook URLs carry the functions' system keys, which exist only once
# the code is deployed and indexed. Idempotent: `event-subscription create` creates or updates.
# Dead-lettering goes through each system topic's own identity (the storage account takes no shared keys); see
# post-deploy.sh for why the subscriptions are created on the event source and then read back from the topic.
$ErrorActionPreference = 'Stop'

$values = @{}
foreach ($line in (azd env get-values)) {
    if ($line -match '^([^=]+)="?(.*?)"?$') { $values[$Matches[1]] = $Matches[2] }
}

function Get-AzdValue([string]$Name) {
    $value = $values[$Name]
    if ([string]::IsNullOrEmpty($value)) {
        throw "$Name is not set in the azd environment; run 'azd provision' first."
    }
    return $value
}

$subscription = Get-AzdValue AZURE_SUBSCRIPTION_ID
$appGroup = Get-AzdValue AZURE_RESOURCE_GROUP
$appName = Get-AzdValue AZURE_FUNCTION_APP_NAME
$appHost = Get-AzdValue AZURE_FUNCTION_APP_HOSTNAME
$storageId = Get-AzdValue STORAGE_ACCOUNT_ID
$storageTopic = Get-AzdValue STORAGE_TOPIC_NAME
$datasets = Get-AzdValue DATASETS_CONTAINER
$deadletter = Get-AzdValue DEADLETTER_CONTAINER
$workspaceId = Get-AzdValue WORKSPACE_ID
$workspaceGroup = Get-AzdValue WORKSPACE_RESOURCE_GROUP
$workspaceTopic = Get-AzdValue WORKSPACE_TOPIC_NAME

# The container resource the topics' identities hold their role on.
$deadletterContainerId = "$storageId/blobServices/default/containers/$deadletter"

# az is az.cmd on Windows: an '&' in an argument must reach cmd.exe inside double quotes, as Azure's samples do.
function ConvertTo-CmdArgument([string]$Text) { return '"' + $Text + '"' }

function Get-SystemKey([string]$Name) {
    for ($attempt = 1; $attempt -le 8; $attempt++) {
        $key = az functionapp keys list --subscription $subscription -g $appGroup -n $appName `
            --query "systemKeys.$Name" -o tsv
        if (-not [string]::IsNullOrEmpty($key)) { return $key }
        if ($attempt -lt 8) {
            Write-Host "  waiting for system key $Name (attempt $attempt/8)..."
            Start-Sleep -Seconds 15
        }
    }
    throw ("The function app $appName has no system key $Name. Its functions are not indexed yet (or failed " +
        "to index): check the app's logs in Application Insights, then run scripts/post-deploy.ps1 again.")
}

# The subscription is on the system topic and dead-letters with the topic's identity.
function Assert-OnTopic([string]$Group, [string]$Topic, [string]$Name) {
    $identity = az eventgrid system-topic event-subscription show --subscription $subscription `
        --resource-group $Group --system-topic-name $Topic --name $Name `
        --query deadLetterWithResourceIdentity.identity.type --output tsv
    if ($identity -ne 'SystemAssigned') {
        throw ("Event subscription $Name is not on system topic $Topic (resource group $Group), or it does not " +
            "dead-letter with the topic's identity. Check the topic with 'az eventgrid system-topic show -g " +
            "$Group -n $Topic', run 'azd provision', then scripts/post-deploy.ps1 again.")
    }
}

# Creates (or updates) the webhook subscription on the event source, with its own filter options ($Filter),
# dead-lettering with the identity of the source's system topic, then checks that it is on that topic.
# $Kind names the event source in the error when az fails.
function New-EventSubscription([string]$Kind, [string]$Group, [string]$Topic, [string]$Name, [string]$SourceId,
    [string]$Endpoint, [string[]]$Filter) {
    az eventgrid event-subscription create `
        --subscription $subscription `
        --source-resource-id $SourceId `
        --name $Name `
        --endpoint-type webhook `
        --endpoint (ConvertTo-CmdArgument $Endpoint) `
        @Filter `
        --deadletter-identity systemassigned `
        --deadletter-identity-endpoint $deadletterContainerId `
        --max-delivery-attempts 30 `
        --event-ttl 1440 `
        --output none
    if ($LASTEXITCODE -ne 0) { throw "creating the $Kind event subscription failed" }
    Assert-OnTopic $Group $Topic $Name
}

Write-Host "Subscribing functions of $appName to Event Grid"

Write-Host "- reading the blobs_extension system key"
$blobsKey = Get-SystemKey blobs_extension
Write-Host "- storage topic $storageTopic -> on_dataset_uploaded (container $datasets)"
New-EventSubscription -Kind storage -Group $appGroup -Topic $storageTopic -Name datasets-to-on-dataset-uploaded `
    -SourceId $storageId `
    -Endpoint "https://$appHost/runtime/webhooks/blobs?functionName=Host.Functions.on_dataset_uploaded&code=$blobsKey" `
    -Filter @(
        '--included-event-types', 'Microsoft.Storage.BlobCreated',
        '--subject-begins-with', "/blobServices/default/containers/$datasets/"
    )

Write-Host "- reading the eventgrid_extension system key"
$eventgridKey = Get-SystemKey eventgrid_extension
Write-Host "- workspace topic $workspaceTopic -> on_job_event (pipeline jobs)"
New-EventSubscription -Kind workspace -Group $workspaceGroup -Topic $workspaceTopic -Name jobs-to-on-job-event `
    -SourceId $workspaceId `
    -Endpoint "https://$appHost/runtime/webhooks/eventgrid?functionName=on_job_event&code=$eventgridKey" `
    -Filter @(
        '--included-event-types', 'Microsoft.MachineLearningServices.RunCompleted',
        'Microsoft.MachineLearningServices.RunStatusChanged',
        '--advanced-filter', 'data.runType', 'StringIn', 'azureml.PipelineRun'
    )

Write-Host "Done: uploads to container '$datasets' start runs; Azure ML job events reach on_job_event."
Write-Host "Undeliverable events land in container '$deadletter', written by each topic's own identity."
