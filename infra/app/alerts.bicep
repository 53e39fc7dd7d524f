// Azure Monitor log alerts on Application Insights: a sync that has not succeeded for twice the
// schedule's interval (the timer stopped, or every run fails), and a Graph credential that expires
// within 30 days. Both read the app's own log lines (see README "Alerts"); an e-mail action group
// is created only when an address is given.
// https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule

@description('Required. Application Insights name (the alerts query its traces).')
param appInsightsName string

@description('Required. Prefix of the alert and action group names.')
param namePrefix string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Optional. E-mail address the alerts notify; empty: the alerts fire without notifying anyone.')
param alertEmail string = ''

@description('Optional. ISO 8601 duration with no successful sync before the alert fires: twice USER_SYNC_SCHEDULE\'s interval (PT1H for the default every 30 minutes; at most P2D).')
param staleAfter string = 'PT1H'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-sync-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'graphusers'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = empty(alertEmail) ? {} : {
  actionGroups: [
    actionGroup.id
  ]
}

// Fires when no "Sync <run id> succeeded: mode=..." line was logged within staleAfter.
resource syncStale 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-sync-stale'
  location: location
  tags: tags
  properties: {
    displayName: 'graphusers: no successful user sync'
    description: 'No user sync succeeded within twice the USER_SYNC_SCHEDULE interval: the timer stopped (for example after a deploy) or every run fails. See GET /api/sync/status and the README troubleshooting table.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: staleAfter
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "Sync " and message has " succeeded: mode="'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

// Fires on the daily WARNING the app logs while the Graph credential expires within 30 days.
resource credentialExpiry 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-credential-expiry'
  location: location
  tags: tags
  properties: {
    displayName: 'graphusers: Graph credential expires soon'
    description: 'The client secret or certificate the app signs in to Microsoft Graph with expires within 30 days: rotate it (README "Rotating the credential").'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'P1D'
    criteria: {
      allOf: [
        {
          query: 'traces | where severityLevel == 2 and message startswith "Graph credential expires"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

@description('Resource ids of the two alert rules (sync staleness, credential expiry).')
output alertRuleIds array = [
  syncStale.id
  credentialExpiry.id
]
