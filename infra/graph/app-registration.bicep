// The Entra side as code, with the Microsoft Graph Bicep extension: the app registration,
// its service principal, and Microsoft Graph's User.Read.All application permission granted.
// Deploying this needs a directory role that may grant app roles on Microsoft Graph:
// Privileged Role Administrator (or Global Administrator).
// Clouds: Microsoft's "what's new" for Graph Bicep lists national-cloud support since January 2025, while
// its limitations page still says public cloud only; outside the public cloud use the README's az fallback.
// https://learn.microsoft.com/graph/templates/bicep/whats-new
// https://learn.microsoft.com/graph/templates/limitations
extension microsoftGraphV1

@description('Required. Immutable unique name of the app registration; redeployments update the same app.')
param uniqueName string

@description('Required. Display name of the app registration.')
param displayName string

@description('Optional. Principal (object) id of a managed identity the app registration trusts through a federated identity credential; empty for none.')
param trustedIdentityPrincipalId string = ''

@description('Optional. Audience of the federated identity credential.')
param federationAudience string = 'api://AzureADTokenExchange'

// Microsoft Graph's well-known application id, the same in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000'
// The User.Read.All application permission (app role) on Microsoft Graph.
var userReadAllRoleId = 'df021288-bdef-4463-88db-98f22de89214'

resource graphServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  // The deployer owns what the deployment made, so someone answers for its credentials (and may add
  // them without an admin role). Relationships append by default: other owners stay.
  // https://learn.microsoft.com/graph/templates/bicep/concept-relationships-in-graph-types
  owners: {
    relationships: [
      deployer().objectId
    ]
  }
  // No keyCredentials or passwordCredentials here on purpose: a declared list replaces the app's
  // credentials on every redeploy, which would drop certificates and secrets added after deployment
  // (the postprovision hook's secret, a rotated certificate).
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        {
          id: userReadAllRoleId
          type: 'Role'
        }
      ]
    }
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
}

// Admin consent for an application permission is this app role assignment on Graph's service principal.
// Directory replication can make a service principal created moments ago unknown to this call, failing
// the first deployment; running azd provision again succeeds (README, "Deploying for the first time").
// https://github.com/microsoftgraph/msgraph-bicep-types/issues/193
resource userReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: userReadAllRoleId
  principalId: servicePrincipal.id
  resourceId: graphServicePrincipal.id
}

// Secretless: the app accepts the function app identity's token (issuer, subject, audience) as its credential.
resource identityTrust 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = if (!empty(trustedIdentityPrincipalId)) {
  name: '${application.uniqueName}/function-app-identity'
  description: 'The graphusers function app managed identity'
  issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  subject: trustedIdentityPrincipalId
  audiences: [
    federationAudience
  ]
}

@description('Application (client) id of the new app registration (GRAPH_CLIENT_ID).')
output clientId string = application.appId

@description('Object id of the service principal of the app registration, which holds the User.Read.All grant.')
output servicePrincipalId string = servicePrincipal.id
