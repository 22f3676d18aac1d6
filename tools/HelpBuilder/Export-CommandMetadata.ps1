<#
    Run by HelpBuilder in a child pwsh (a loaded binary module cannot be unloaded, so every run imports the
    freshly built DLL). Writes what PowerShell itself reports about each exported cmdlet to -OutFile as JSON:
    the facts the help's syntax and parameter attributes are made from, never a second copy of them.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $ManifestPath,
    [Parameter(Mandatory)] [string] $OutFile
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# A bare relative path would be taken for a module name: resolve it first.
$module = Import-Module -Name (Resolve-Path -LiteralPath $ManifestPath).ProviderPath -PassThru -Force
# WhatIf and Confirm are not in this list: PlatyPS documents them like any other parameter.
$common = [System.Management.Automation.Cmdlet]::CommonParameters

$commands = foreach ($cmd in Get-Command -Module $module.Name -CommandType Cmdlet | Sort-Object Name) {
    [ordered]@{
        Name                = $cmd.Name
        Verb                = $cmd.Verb
        Noun                = $cmd.Noun
        HelpFile            = $cmd.HelpFile
        DefaultParameterSet = $cmd.DefaultParameterSet
        OutputTypes         = @($cmd.OutputType | ForEach-Object Name)
        Parameters          = @(
            foreach ($p in $cmd.Parameters.Values | Where-Object Name -NotIn $common) {
                [ordered]@{
                    Name              = $p.Name
                    Type              = $p.ParameterType.ToString()
                    IsSwitch          = $p.SwitchParameter
                    Aliases           = @($p.Aliases)
                    AcceptedValues    = @($p.Attributes | Where-Object { $_ -is [System.Management.Automation.ValidateSetAttribute] } | ForEach-Object ValidValues)
                    SupportsWildcards = @($p.Attributes | Where-Object { $_ -is [System.Management.Automation.SupportsWildcardsAttribute] }).Count -gt 0
                }
            }
        )
        ParameterSets       = @(
            foreach ($set in $cmd.ParameterSets) {
                [ordered]@{
                    Name       = $set.Name
                    IsDefault  = $set.IsDefault
                    Parameters = @(
                        foreach ($p in $set.Parameters | Where-Object Name -NotIn $common) {
                            [ordered]@{
                                Name                            = $p.Name
                                Position                        = if ($p.Position -eq [int]::MinValue) { $null } else { $p.Position }
                                IsMandatory                     = $p.IsMandatory
                                ValueFromPipeline               = $p.ValueFromPipeline
                                ValueFromPipelineByPropertyName = $p.ValueFromPipelineByPropertyName
                            }
                        }
                    )
                }
            }
        )
    }
}

[ordered]@{ ModuleName = $module.Name; Commands = @($commands) } |
    ConvertTo-Json -Depth 8 |
    Set-Content -LiteralPath $OutFile -Encoding utf8NoBOM
