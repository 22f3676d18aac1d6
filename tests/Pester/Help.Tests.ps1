#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
<#
    Help tests (Pester 5).

    The cmdlet tests need the built module in out/OdaKvmBackup (manifest, dll and
    en-US/OdaKvmBackup.dll-Help.xml made by tools/ConvertTo-MamlHelp.ps1 from docs/help).
    The converter tests need only docs/help and tools/.

        Invoke-Pester ./tests/Pester/Help.Tests.ps1 -Output Detailed
#>

BeforeDiscovery {
    $manifest = "$PSScriptRoot/../../out/OdaKvmBackup/OdaKvmBackup.psd1"
    $moduleBuilt = Test-Path -LiteralPath $manifest
    $cmdletCases = @()
    if ($moduleBuilt) {
        $module = Import-Module $manifest -PassThru -ErrorAction Stop
        $common = [System.Management.Automation.PSCmdlet]::CommonParameters
        $cmdletCases = @(
            foreach ($c in (Get-Command -Module $module.Name -CommandType Cmdlet | Sort-Object Name)) {
                @{
                    Name       = $c.Name
                    Parameters = @(
                        $c.Parameters.Keys | Where-Object { $_ -notin $common } | Sort-Object |
                            ForEach-Object { @{ CommandName = $c.Name; Parameter = $_ } }
                    )
                }
            }
        )
    }
}

BeforeAll {
    $repo = (Resolve-Path "$PSScriptRoot/../..").ProviderPath
    $manifest = "$PSScriptRoot/../../out/OdaKvmBackup/OdaKvmBackup.psd1"
    $helpDocs = Join-Path $repo 'docs/help'
    $converter = Join-Path $repo 'tools/ConvertTo-MamlHelp.ps1'
    if (Test-Path -LiteralPath $manifest) {
        $module = Import-Module $manifest -PassThru -ErrorAction Stop
    }

    # Text of a help description (array of paragraphs) as one string.
    function Get-HelpText {
        param($Node)
        (@($Node) | Where-Object { $_ } | ForEach-Object { $_.Text }) -join "`n"
    }
}

Describe 'OdaKvmBackup module' {
    It 'is built in out/OdaKvmBackup (run the build before the help tests)' {
        $manifest | Should -Exist
    }

    It 'exports cmdlets' -Skip:(-not $moduleBuilt) {
        @(Get-Command -Module $module.Name -CommandType Cmdlet).Count | Should -BeGreaterThan 0
    }

    It 'has a markdown page in docs/help for every cmdlet, and no page for a cmdlet that does not exist' -Skip:(-not $moduleBuilt) {
        $cmdlets = @(Get-Command -Module $module.Name -CommandType Cmdlet | ForEach-Object Name | Sort-Object)
        $pages = @(Get-ChildItem -LiteralPath $helpDocs -Filter '*-*.md' | ForEach-Object BaseName | Sort-Object)
        $pages | Should -Be $cmdlets
    }

    It 'ships help built from the current docs/help' -Skip:(-not $moduleBuilt) {
        $fresh = Join-Path $TestDrive 'fresh/OdaKvmBackup.dll-Help.xml'
        & $converter -MarkdownPath $helpDocs -OutputPath $fresh | Out-Null
        $built = Join-Path $module.ModuleBase 'en-US/OdaKvmBackup.dll-Help.xml'
        $built | Should -Exist
        Get-Content -LiteralPath $built -Raw | Should -BeExactly (Get-Content -LiteralPath $fresh -Raw) -Because 'docs/help changed since the last build; rebuild the module'
    }
}

Describe 'Help of <Name>' -ForEach $cmdletCases {
    BeforeAll {
        $cmdInfo = Get-Command -Name $Name -CommandType Cmdlet
        $help = Get-Help -Name $Name -Full
        $pagePath = Join-Path $helpDocs "$Name.md"
        $page = if (Test-Path -LiteralPath $pagePath) { Get-Content -LiteralPath $pagePath -Raw } else { '' }
    }

    It 'comes from the MAML file, not from the generated help' {
        $help.PSObject.TypeNames | Should -Contain 'MamlCommandHelpInfo'
    }

    It 'has a synopsis that is not the generated syntax' {
        $synopsis = "$($help.Synopsis)".Trim()
        $synopsis | Should -Not -BeNullOrEmpty
        $synopsis | Should -Not -Be $Name
        $synopsis | Should -Not -BeLike "$Name *"
        $synopsis | Should -Not -BeLike '*<CommonParameters>*'
    }

    It 'has a description' {
        Get-HelpText $help.description | Should -Not -BeNullOrEmpty
    }

    It 'has at least one example with code' {
        $examples = @($help.examples.example | Where-Object { $_ -and "$($_.code)".Trim() })
        $examples.Count | Should -BeGreaterThan 0
    }

    It 'has a markdown page docs/help/<Name>.md' {
        $pagePath | Should -Exist
    }

    It 'documents no parameter the cmdlet does not have' {
        $real = @($cmdInfo.Parameters.Keys)
        $documented = @($help.parameters.parameter | Where-Object { $_ } | ForEach-Object { $_.name })
        $documented | Where-Object { $_ -notin $real } | Should -BeNullOrEmpty
    }

    Context 'parameter -<Parameter>' -ForEach $Parameters {
        BeforeAll {
            $helpParam = @($help.parameters.parameter | Where-Object { $_ -and $_.name -eq $Parameter })[0]
            $meta = $cmdInfo.Parameters[$Parameter]
            $attributes = @($meta.Attributes | Where-Object { $_ -is [System.Management.Automation.ParameterAttribute] })
        }

        It 'has a description in Get-Help' {
            $helpParam | Should -Not -BeNullOrEmpty -Because "-$Parameter is missing from the help of $CommandName"
            Get-HelpText $helpParam.description | Should -Not -BeNullOrEmpty
        }

        It 'is shown by Get-Help -Parameter' {
            $one = Get-Help -Name $CommandName -Parameter $Parameter -ErrorAction SilentlyContinue
            $one.name | Should -Be $Parameter
        }

        It 'has a section in the markdown page' {
            $page -match ('(?m)^###\s+-' + [regex]::Escape($Parameter) + '\s*$') |
                Should -BeTrue -Because "docs/help/$CommandName.md needs a '### -$Parameter' section"
        }

        It 'has the type of the cmdlet parameter' {
            $helpParam.type.name | Should -Be $meta.ParameterType.Name
        }

        It 'has the Required flag of the cmdlet parameter' {
            $mandatory = @($attributes | ForEach-Object { $_.Mandatory } | Sort-Object -Unique)
            if ($mandatory.Count -eq 1) {
                $helpParam.required | Should -Be $mandatory[0].ToString().ToLowerInvariant()
            }
        }

        It 'has the Position of the cmdlet parameter' {
            $positions = @($attributes | ForEach-Object {
                    if ($_.Position -eq [int]::MinValue) { 'named' } else { [string]$_.Position }
                } | Sort-Object -Unique)
            $helpParam.position | Should -BeIn $positions
        }

        It 'has the pipeline input of the cmdlet parameter' {
            $kinds = @(
                if ($attributes | Where-Object ValueFromPipeline) { 'ByValue' }
                if ($attributes | Where-Object ValueFromPipelineByPropertyName) { 'ByPropertyName' }
            )
            $documented = "$($helpParam.pipelineInput)"
            if ($kinds.Count -eq 0) {
                $documented | Should -BeLike 'False*'
            }
            else {
                $documented | Should -BeLike 'True*'
                $listed = @([regex]::Matches($documented, 'By\w+') | ForEach-Object Value | Sort-Object)
                $listed | Should -Be @($kinds | Sort-Object)
            }
        }

        It 'has the aliases of the cmdlet parameter' {
            $documented = @("$($helpParam.aliases)" -split '\s*,\s*' | Where-Object { $_ -and $_ -ne 'none' } | Sort-Object)
            $documented | Should -Be @($meta.Aliases | Sort-Object)
        }
    }
}

Describe 'about_OdaKvmBackup' -Skip:(-not $moduleBuilt) {
    It 'ships en-US/about_OdaKvmBackup.help.txt next to the module' {
        Join-Path $module.ModuleBase 'en-US/about_OdaKvmBackup.help.txt' | Should -Exist
    }

    It 'is found by Get-Help about_OdaKvmBackup' {
        $about = Get-Help about_OdaKvmBackup
        $about | Should -Not -BeNullOrEmpty
        "$about" | Should -Match 'about_OdaKvmBackup'
        "$about" | Should -Match 'SHORT DESCRIPTION'
        $about.Synopsis | Should -Not -BeNullOrEmpty
    }
}

Describe 'tools/ConvertTo-MamlHelp.ps1' {
    BeforeAll {
        $out = Join-Path $TestDrive 'en-US/OdaKvmBackup.dll-Help.xml'
        $result = & $converter -MarkdownPath $helpDocs -OutputPath $out
        [xml] $xml = Get-Content -LiteralPath $out -Raw
        $nsm = [System.Xml.XmlNamespaceManager]::new($xml.NameTable)
        $nsm.AddNamespace('msh', 'http://msh')
        $nsm.AddNamespace('maml', 'http://schemas.microsoft.com/maml/2004/10')
        $nsm.AddNamespace('command', 'http://schemas.microsoft.com/maml/dev/command/2004/10')
        $nsm.AddNamespace('dev', 'http://schemas.microsoft.com/maml/dev/2004/10')
        $commandPages = @(Get-ChildItem -LiteralPath $helpDocs -Filter '*-*.md')

        # A copy of one good page, broken by $Edit, alone in its own folder.
        function Invoke-OnBrokenPage {
            param([string] $Name, [scriptblock] $Edit)
            $dir = Join-Path $TestDrive ([guid]::NewGuid().ToString('n'))
            $null = New-Item -ItemType Directory -Path $dir
            $text = Get-Content -LiteralPath (Join-Path $helpDocs 'Get-VmDisk.md') -Raw
            Set-Content -LiteralPath (Join-Path $dir 'Get-VmDisk.md') -Value (& $Edit $text) -NoNewline
            & $converter -MarkdownPath $dir -OutputPath (Join-Path $dir 'out/OdaKvmBackup.dll-Help.xml')
        }
    }

    It 'writes well-formed MAML with the MAML namespaces' {
        $xml.DocumentElement.LocalName | Should -Be 'helpItems'
        $xml.DocumentElement.NamespaceURI | Should -Be 'http://msh'
        $xml.DocumentElement.GetAttribute('schema') | Should -Be 'maml'
    }

    It 'writes one command:command per cmdlet page' {
        $names = @($xml.SelectNodes('/msh:helpItems/command:command/command:details/command:name', $nsm) | ForEach-Object InnerText | Sort-Object)
        $names | Should -Be @($commandPages.BaseName | Sort-Object)
    }

    It 'gives every command a synopsis, a syntax, parameters and examples' {
        foreach ($cmd in $xml.SelectNodes('/msh:helpItems/command:command', $nsm)) {
            $cmd.SelectSingleNode('command:details/maml:description/maml:para', $nsm).InnerText | Should -Not -BeNullOrEmpty
            $cmd.SelectNodes('command:syntax/command:syntaxItem', $nsm).Count | Should -BeGreaterThan 0
            $cmd.SelectNodes('command:examples/command:example/dev:code', $nsm).Count | Should -BeGreaterThan 0
            foreach ($p in $cmd.SelectNodes('command:parameters/command:parameter', $nsm)) {
                $p.GetAttribute('required') | Should -BeIn 'true', 'false'
                $p.GetAttribute('position') | Should -Match '^(named|\d+)$'
                $p.GetAttribute('pipelineInput') | Should -Match '^(True|False)'
                $p.SelectSingleNode('maml:description/maml:para', $nsm).InnerText | Should -Not -BeNullOrEmpty
            }
        }
    }

    It 'writes the about topics as about_*.help.txt' {
        $txt = Join-Path $TestDrive 'en-US/about_OdaKvmBackup.help.txt'
        $txt | Should -Exist
        Get-Content -LiteralPath $txt -TotalCount 2 | Should -Be @('TOPIC', '    about_OdaKvmBackup')
        $result.AboutTopics | Should -Contain $txt
    }

    It 'accepts the unchanged page' {
        { Invoke-OnBrokenPage -Edit { param($t) $t } } | Should -Not -Throw
    }

    It 'rejects a page without <What>' -ForEach @(
        @{ What = 'SYNOPSIS'; Edit = { param($t) $t -replace '(?s)## SYNOPSIS.*?(?=## SYNTAX)', '' } }
        @{ What = 'DESCRIPTION'; Edit = { param($t) $t -replace '(?s)## DESCRIPTION.*?(?=## EXAMPLES)', '' } }
        @{ What = 'an example'; Edit = { param($t) $t -replace '(?s)(## EXAMPLES\s*\n).*?(?=## PARAMETERS)', '$1' } }
        @{ What = 'a parameter description'; Edit = { param($t) $t -replace '(?s)(### -DomainName\s*\n).*?(?=```yaml)', '$1' } }
    ) {
        { Invoke-OnBrokenPage -Edit $Edit } | Should -Throw
    }

    It 'rejects a syntax block that disagrees with the parameters' {
        { Invoke-OnBrokenPage -Edit { param($t) $t -replace 'Get-VmDisk \[-DomainName\] <String\[\]>', 'Get-VmDisk [-DomainName <String[]>]' } } |
            Should -Throw '*disagree*'
    }
}
