#Requires -Version 7.4
#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
<#
    Help tests (Pester 5). No lab: they need the built module and help tool (./build.ps1 -Task Build).

    - tools/HelpBuilder's check finds no disagreement between docs/help and the cmdlets, and does find one made on
      purpose in a copy of docs/help;
    - Get-Help, in a child pwsh that imports the built module, shows each cmdlet's synopsis, parameters with their
      descriptions and examples as docs/help has them, and the about_OdaKvmBackup topic. The expected text is read
      from docs/help with pwsh's own markdown parser (ConvertFrom-Markdown), not with the tool under test.

        ./build.ps1 -Task Build, Pester -PesterPath tests/Pester/Help.Tests.ps1
#>

BeforeDiscovery {
    # From the source manifest: discovery must not import the DLL (a binary module cannot be unloaded).
    $exported = (Import-PowerShellDataFile "$PSScriptRoot/../../module/OdaKvmBackup.psd1").CmdletsToExport
    $cmdletCases = @($exported | ForEach-Object { @{ Name = $_ } })
}

BeforeAll {
    $repo = (Resolve-Path "$PSScriptRoot/../..").ProviderPath
    $manifest = Join-Path $repo 'out/OdaKvmBackup/OdaKvmBackup.psd1'
    $tool = Join-Path $repo 'out/tools/HelpBuilder/HelpBuilder.dll'
    $docs = Join-Path $repo 'docs/help'
    foreach ($built in $manifest, $tool) {
        if (-not (Test-Path -LiteralPath $built)) { throw "$built is missing: run ./build.ps1 -Task Build first." }
    }
    $exported = @((Import-PowerShellDataFile (Join-Path $repo 'module/OdaKvmBackup.psd1')).CmdletsToExport)
    # A child of this same pwsh, wherever it is installed (its pwsh.dll, run by dotnet, if it has no executable).
    $pwsh = Join-Path $PSHOME $(if ($IsWindows) { 'pwsh.exe' } else { 'pwsh' })
    if (-not (Test-Path -LiteralPath $pwsh)) { $pwsh = Join-Path $PSHOME 'pwsh.dll' }
    $pwshCommand = @(if ($pwsh.EndsWith('.dll')) { 'dotnet' }) + $pwsh

    function Invoke-HelpCheck([string] $Docs) {
        $report = & dotnet $tool check --docs $Docs --module $manifest --pwsh $pwsh 2>&1
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Report = ($report | Out-String).Trim() }
    }

    # Text of Markdig inlines as Get-Help shows it: `code` keeps its backticks, emphasis loses its stars,
    # a link is its text (followed by "(url)" when it is a web address).
    function Get-InlineText($Container) {
        $text = -join @(foreach ($inline in $Container) {
                if ($inline -is [Markdig.Syntax.Inlines.LiteralInline]) { $inline.Content.ToString() }
                elseif ($inline -is [Markdig.Syntax.Inlines.CodeInline]) { '`' + $inline.Content + '`' }
                elseif ($inline -is [Markdig.Syntax.Inlines.LineBreakInline]) { ' ' }
                elseif ($inline -is [Markdig.Syntax.Inlines.LinkInline]) {
                    $label = Get-InlineText $inline
                    if ($inline.Url -match '^https?://' -and $inline.Url -ne $label) { "$label ($($inline.Url))" } else { $label }
                }
                elseif ($inline -is [Markdig.Syntax.Inlines.ContainerInline]) { Get-InlineText $inline }
            })
        $text.Trim()
    }

    # A page as pwsh's Markdig reads it: each "## SECTION" with its blocks and its "### Sub" sections.
    function Read-HelpPage([string] $Path) {
        $sections = @{}
        $section = $null
        $sub = $null
        foreach ($block in (ConvertFrom-Markdown -LiteralPath $Path).Tokens) {
            if ($block -is [Markdig.Syntax.HeadingBlock] -and $block.Level -eq 2) {
                $section = @{ Blocks = [System.Collections.Generic.List[object]]::new(); Subs = [ordered]@{} }
                $sections[(Get-InlineText $block.Inline)] = $section
                $sub = $null
            }
            elseif ($block -is [Markdig.Syntax.HeadingBlock] -and $block.Level -eq 3 -and $section) {
                $sub = [System.Collections.Generic.List[object]]::new()
                $section.Subs[(Get-InlineText $block.Inline)] = $sub
            }
            # -ne $null: an empty list is false in PowerShell.
            elseif ($null -ne $sub) { $sub.Add($block) }
            elseif ($null -ne $section) { $section.Blocks.Add($block) }
        }
        $sections
    }

    function Get-FirstParagraph($Blocks) {
        Get-InlineText (@($Blocks | Where-Object { $_ -is [Markdig.Syntax.ParagraphBlock] })[0].Inline)
    }

    function Get-FirstCode($Blocks) {
        @($Blocks | Where-Object { $_ -is [Markdig.Syntax.FencedCodeBlock] })[0].Lines.ToString().TrimEnd()
    }

    function Compress-WhiteSpace([string] $Text) { ($Text -split '\s+' | Where-Object { $_ }) -join ' ' }

    # For -BeLike "*$(Format-Literal $text)*": help text has [ ] * ? that are not wildcards.
    function Format-Literal([string] $Text) { [WildcardPattern]::Escape($Text) }

    # One child pwsh imports the built module and writes what Get-Help returns for every cmdlet and the about topic.
    $dumpScript = Join-Path $TestDrive 'dump-help.ps1'
    $dumpFile = Join-Path $TestDrive 'help.json'
    Set-Content -LiteralPath $dumpScript -Value @'
param([string] $ManifestPath, [string] $OutFile)
$ErrorActionPreference = 'Stop'
$module = Import-Module -Name $ManifestPath -PassThru
$common = [System.Management.Automation.Cmdlet]::CommonParameters
$commands = foreach ($cmd in Get-Command -Module $module.Name -CommandType Cmdlet) {
    $help = Get-Help -Name $cmd.Name -Full
    [ordered]@{
        Name             = $cmd.Name
        TypeNames        = @($help.PSObject.TypeNames)
        Synopsis         = "$($help.Synopsis)".Trim()
        # Get-Help ends all but the last paragraph with a newline of its own.
        Description      = @($help.description | ForEach-Object { $_.Text.Trim() })
        CmdletParameters = @($cmd.Parameters.Keys | Where-Object { $_ -notin $common })
        Parameters       = @($help.parameters.parameter | ForEach-Object { [ordered]@{ Name = $_.name; Description = @($_.description | ForEach-Object { $_.Text.Trim() }) } })
        Examples         = @($help.examples.example | ForEach-Object { [ordered]@{ Title = $_.title; Code = $_.code } })
        Text             = $help | Out-String -Width 250
    }
}
[ordered]@{ Commands = @($commands); About = (Get-Help -Name "about_$($module.Name)" | Out-String -Width 250) } |
    ConvertTo-Json -Depth 6 | Set-Content -LiteralPath $OutFile
'@
    & $pwshCommand[0] @($pwshCommand | Select-Object -Skip 1) -NoProfile -NonInteractive -File $dumpScript $manifest $dumpFile
    if ($LASTEXITCODE -ne 0) { throw "The child pwsh could not read the help of $manifest (exit code $LASTEXITCODE)." }
    $dump = Get-Content -LiteralPath $dumpFile -Raw | ConvertFrom-Json
}

Describe 'docs/help and the cmdlets' {
    It 'agree: the help check of tools/HelpBuilder reports nothing' {
        $check = Invoke-HelpCheck $docs
        $check.ExitCode | Should -Be 0 -Because "the help check reported:`n$($check.Report)"
        # The check looked at every exported cmdlet, its page and the about topic.
        $check.Report | Should -BeLike "*Help check: $($exported.Count) cmdlet(s), $($exported.Count) page(s), 1 about topic(s): they agree.*"
    }

    Context 'a copy of docs/help broken on purpose' {
        BeforeEach {
            $copy = Join-Path $TestDrive ([guid]::NewGuid().ToString('n'))
            $null = New-Item -ItemType Directory -Path $copy
            Copy-Item -Path (Join-Path $docs '*.md') -Destination $copy
            $page = Join-Path $copy 'Get-VmDisk.md'
            $text = Get-Content -LiteralPath $page -Raw
        }

        It 'fails the check when a page documents a parameter its cmdlet does not have' {
            $fake = "### -FakeParameter`nDoes nothing.`n`n``````yaml`nType: String`nParameter Sets: (All)`nAliases:`n`nRequired: False`nPosition: Named`nDefault value: None`nAccept pipeline input: False`nAccept wildcard characters: False`n```````n`n"
            Set-Content -LiteralPath $page -NoNewline -Value $text.Replace('### CommonParameters', $fake + '### CommonParameters')
            $check = Invoke-HelpCheck $copy
            $check.ExitCode | Should -Be 1
            $check.Report | Should -BeLike '*Get-VmDisk.md: documents -FakeParameter, which Get-VmDisk does not have*'
        }

        It 'fails the check when a parameter fact on the page differs from the cmdlet' {
            $text.Contains("Position: 0`n") | Should -BeTrue
            Set-Content -LiteralPath $page -NoNewline -Value $text.Replace("Position: 0`n", "Position: 3`n")
            $check = Invoke-HelpCheck $copy
            $check.ExitCode | Should -Be 1
            $check.Report | Should -BeLike "*Get-VmDisk.md: -DomainName: the yaml says 'Position: 3', the cmdlet 'Position: 0'*"
        }
    }
}

Describe 'Get-Help in a child pwsh' {
    It 'reads the help of every exported cmdlet' {
        @($dump.Commands.Name | Sort-Object) | Should -Be @($exported | Sort-Object)
    }

    Context '<Name>' -ForEach $cmdletCases {
        BeforeAll {
            $help = $dump.Commands | Where-Object Name -EQ $Name
            $page = Read-HelpPage (Join-Path $docs "$Name.md")
        }

        It 'comes from the MAML file, not from help PowerShell makes up' {
            $help.TypeNames | Should -Contain 'MamlCommandHelpInfo'
        }

        It 'shows the synopsis of the page' {
            $help.Synopsis | Should -Not -BeNullOrEmpty
            $help.Synopsis | Should -BeExactly (Get-FirstParagraph $page['SYNOPSIS'].Blocks)
        }

        It 'shows the description of the page' {
            $help.Description[0] | Should -Not -BeNullOrEmpty
            $help.Description[0] | Should -BeExactly (Get-FirstParagraph $page['DESCRIPTION'].Blocks)
        }

        It 'shows every parameter of the cmdlet with its description from the page' {
            @($help.CmdletParameters).Count | Should -BeGreaterThan 0
            @($help.Parameters.Name | Sort-Object) | Should -Be @($help.CmdletParameters | Sort-Object)
            foreach ($parameter in $help.Parameters) {
                $section = $page['PARAMETERS'].Subs["-$($parameter.Name)"]
                $section.Count | Should -BeGreaterThan 0 -Because "docs/help/$Name.md needs a '### -$($parameter.Name)' section"
                $parameter.Description[0] | Should -BeExactly (Get-FirstParagraph $section) -Because "-$($parameter.Name) shows its description"
            }
        }

        It 'shows the examples of the page, code first' {
            $examples = @($page['EXAMPLES'].Subs.GetEnumerator())
            $examples.Count | Should -BeGreaterThan 0
            @($help.Examples).Count | Should -Be $examples.Count
            for ($i = 0; $i -lt $examples.Count; $i++) {
                $help.Examples[$i].Title | Should -BeLike "*$(Format-Literal $examples[$i].Key)*"
                $help.Examples[$i].Code | Should -BeLike "$(Format-Literal (Get-FirstCode $examples[$i].Value))*" -Because "example $($i + 1) starts with its code"
            }
        }

        It 'prints synopsis, every parameter and every example with Get-Help -Full' {
            $text = Compress-WhiteSpace $help.Text
            $text | Should -BeLike "*SYNOPSIS $(Format-Literal (Compress-WhiteSpace $help.Synopsis))*"
            foreach ($parameter in $help.CmdletParameters) { $help.Text | Should -Match "(?m)^\s+-$parameter\b" }
            foreach ($example in $help.Examples) { $text | Should -BeLike "*$(Format-Literal (Compress-WhiteSpace $example.Title))*" }
        }
    }
}

Describe 'about_OdaKvmBackup' {
    It 'is shipped as en-US/about_OdaKvmBackup.help.txt beside the module' {
        Join-Path (Split-Path $manifest) 'en-US/about_OdaKvmBackup.help.txt' | Should -Exist
    }

    It 'is shown by Get-Help about_OdaKvmBackup with the text of docs/help/about_OdaKvmBackup.md' {
        $page = Read-HelpPage (Join-Path $docs 'about_OdaKvmBackup.md')
        $about = Compress-WhiteSpace $dump.About
        $about | Should -BeLike '*TOPIC about_OdaKvmBackup*'
        $about | Should -BeLike "*SHORT DESCRIPTION $(Format-Literal (Compress-WhiteSpace (Get-FirstParagraph $page['SHORT DESCRIPTION'].Blocks)))*"
        $about | Should -BeLike "*LONG DESCRIPTION $(Format-Literal (Compress-WhiteSpace (Get-FirstParagraph $page['LONG DESCRIPTION'].Blocks)))*"
    }
}
