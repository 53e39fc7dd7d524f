// The Entra side as code, with the Microsoft Graph Bicep extension: the app registration,
// its service principal, and Microsoft Graph's User.Read.All application permission granted.
// Deploying this needs a directory role that may grant app roles on Microsoft Graph:
// Privileged Role Administrator (or Global Administrator).
extension microsoftGraphV1

@description('Required. Immutable unique name of the app registration; redeployments update the same app.')
param uniqueName string

@description('Required. Display name of the app registration.')
param displayName string

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
resource userReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: userReadAllRoleId
  principalId: servicePrincipal.id
  resourceId: graphServicePrincipal.id
}

@description('Application (client) id of the new app registration (GRAPH_CLIENT_ID).')
output clientId string = application.appId
