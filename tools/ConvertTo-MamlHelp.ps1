#Requires -Version 7.2
<#
.SYNOPSIS
    Converts the PlatyPS-style markdown help in docs/help to MAML and about_*.help.txt.

.DESCRIPTION
    PlatyPS is not available on the build hosts, so this script does the part of
    New-ExternalHelp the module needs:

    - every <CmdletName>.md page (PlatyPS schema 2.0.0) becomes one command:command
      element of the MAML file given by -OutputPath;
    - every about_*.md page becomes about_*.help.txt, as plain text, in the folder
      of -OutputPath.

    The script checks the pages while it reads them and throws, listing every problem
    found, when a page has no SYNOPSIS, no DESCRIPTION or no example, when a
    parameter has no description or no metadata block, or when the SYNTAX block and
    the PARAMETERS section disagree. Nothing is written when a page is rejected.

.PARAMETER MarkdownPath
    Folder holding the markdown pages (docs/help).

.PARAMETER OutputPath
    Path of the MAML file to write, e.g. out/OdaKvmBackup/en-US/OdaKvmBackup.dll-Help.xml.
    The file name must match the "external help file" of every page.

.EXAMPLE
    ./tools/ConvertTo-MamlHelp.ps1 -MarkdownPath docs/help -OutputPath out/OdaKvmBackup/en-US/OdaKvmBackup.dll-Help.xml
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)]
    [string] $MarkdownPath,

    [Parameter(Mandatory)]
    [string] $OutputPath
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$ns = @{
    msh     = 'http://msh'
    maml    = 'http://schemas.microsoft.com/maml/2004/10'
    command = 'http://schemas.microsoft.com/maml/dev/command/2004/10'
    dev     = 'http://schemas.microsoft.com/maml/dev/2004/10'
    MSHelp  = 'http://msdn.microsoft.com/mshelp'
}

# Width of the about_*.help.txt text (Get-Help prints it as is).
$AboutWidth = 80

# ---------------------------------------------------------------------------
# Markdown reading
# ---------------------------------------------------------------------------

function Split-FrontMatter {
    # Returns @{ Meta = @{...}; Lines = string[]; Offset = int } (Offset: number of lines consumed).
    param([string[]] $Lines)
    $meta = [ordered]@{}
    if ($Lines.Count -eq 0 -or $Lines[0].Trim() -ne '---') {
        return @{ Meta = $null; Lines = $Lines; Offset = 0 }
    }
    for ($i = 1; $i -lt $Lines.Count; $i++) {
        if ($Lines[$i].Trim() -eq '---') {
            $rest = if ($i + 1 -lt $Lines.Count) { $Lines[($i + 1)..($Lines.Count - 1)] } else { @() }
            return @{ Meta = $meta; Lines = [string[]]$rest; Offset = $i + 1 }
        }
        if ($Lines[$i] -match '^\s*([^:#]+?)\s*:\s*(.*?)\s*$') {
            $meta[$Matches[1]] = $Matches[2]
        }
    }
    throw 'front matter is not closed by a --- line'
}

function Get-MarkdownOutline {
    # Splits markdown lines into headings (outside fenced code) and their content.
    # Returns a list of @{ Level; Title; Lines; LineNumber }; content before the first heading is Level 0.
    param([string[]] $Lines, [int] $Offset = 0)
    $nodes = [System.Collections.Generic.List[object]]::new()
    $current = @{ Level = 0; Title = ''; Lines = [System.Collections.Generic.List[string]]::new(); LineNumber = $Offset }
    $nodes.Add($current)
    $fence = $null
    for ($i = 0; $i -lt $Lines.Count; $i++) {
        $line = $Lines[$i]
        if ($null -ne $fence) {
            if ($line -match '^\s*(`{3,}|~{3,})\s*$' -and $Matches[1].StartsWith($fence)) { $fence = $null }
            $current.Lines.Add($line)
            continue
        }
        if ($line -match '^\s*(`{3,}|~{3,})') {
            $fence = $Matches[1]
            $current.Lines.Add($line)
            continue
        }
        if ($line -match '^(#{1,6})\s+(.*?)\s*#*\s*$') {
            $current = @{ Level = $Matches[1].Length; Title = $Matches[2]; Lines = [System.Collections.Generic.List[string]]::new(); LineNumber = $Offset + $i + 1 }
            $nodes.Add($current)
            continue
        }
        $current.Lines.Add($line)
    }
    if ($null -ne $fence) { throw "a code fence ($fence) is never closed" }
    return $nodes
}

function Get-MarkdownBlocks {
    # Splits section content into blocks: @{ Kind = 'para'|'list'|'code'|'table'; Text; Items; Lang }.
    param([string[]] $Lines)
    $blocks = [System.Collections.Generic.List[object]]::new()
    $buffer = [System.Collections.Generic.List[string]]::new()

    $flush = {
        if ($buffer.Count -eq 0) { return }
        $first = $buffer[0]
        if ($first -match '^\s*\|') {
            $blocks.Add(@{ Kind = 'table'; Text = ($buffer -join "`n") })
        }
        elseif ($first -match '^\s*([-*+]|\d+[.)])\s+') {
            $items = [System.Collections.Generic.List[string]]::new()
            foreach ($l in $buffer) {
                if ($l -match '^\s*([-*+]|\d+[.)])\s+(.*)$') {
                    $marker = $Matches[1]
                    $itemText = $Matches[2].Trim()
                    if ($marker -notmatch '^\d') { $marker = '-' }
                    $items.Add("$marker $itemText")
                }
                elseif ($items.Count -gt 0) {
                    $items[$items.Count - 1] += ' ' + $l.Trim()
                }
            }
            $blocks.Add(@{ Kind = 'list'; Items = [string[]]$items })
        }
        else {
            $blocks.Add(@{ Kind = 'para'; Text = (($buffer | ForEach-Object { $_.Trim() }) -join ' ') })
        }
        $buffer.Clear()
    }

    $i = 0
    while ($i -lt $Lines.Count) {
        $line = $Lines[$i]
        if ($line -match '^(\s*)(`{3,}|~{3,})\s*([\w+-]*)') {
            & $flush
            $indent = $Matches[1].Length
            $fence = $Matches[2]
            $lang = $Matches[3]
            $code = [System.Collections.Generic.List[string]]::new()
            $i++
            while ($i -lt $Lines.Count -and -not ($Lines[$i] -match '^\s*(`{3,}|~{3,})\s*$' -and $Matches[1].StartsWith($fence))) {
                $l = $Lines[$i]
                if ($indent -gt 0 -and $l.Length -ge $indent -and $l.Substring(0, $indent).Trim() -eq '') { $l = $l.Substring($indent) }
                $code.Add($l.TrimEnd())
                $i++
            }
            $i++
            $blocks.Add(@{ Kind = 'code'; Text = ($code -join "`n"); Lang = $lang })
            continue
        }
        if ($line.Trim() -eq '') { & $flush; $i++; continue }
        # A list item after plain text starts a new block (markdown allows that without a blank line).
        if ($buffer.Count -gt 0 -and $line -match '^\s*([-*+]|\d+[.)])\s+' -and $buffer[0] -notmatch '^\s*([-*+]|\d+[.)])\s+') { & $flush }
        $buffer.Add($line)
        $i++
    }
    & $flush
    return $blocks
}

function ConvertFrom-Inline {
    # Plain text for Get-Help: links become "text (url)" (or "text" for links to other pages),
    # bold markers go; `code` is kept as is because it marks commands and paths.
    param([string] $Text)
    $t = [regex]::Replace($Text, '\[([^\]]+)\]\(([^)\s]*)\)', {
            param($m)
            $label = $m.Groups[1].Value
            $url = $m.Groups[2].Value
            if ($url -match '^(https?|ftp)://' -and $url -ne $label) { "$label ($url)" } else { $label }
        })
    $t = [regex]::Replace($t, '(\*\*|__)(?=\S)(.+?)(?<=\S)\1', '$2')
    $t = $t -replace '<br\s*/?>', ' '
    return $t
}

function Get-BlockParagraphs {
    # MAML paragraphs for a list of blocks. Get-Help trims the first line of a paragraph,
    # so code is written flush left (relative indentation kept).
    param($Blocks)
    foreach ($b in $Blocks) {
        switch ($b.Kind) {
            'para' { ConvertFrom-Inline $b.Text }
            'list' { ($b.Items | ForEach-Object { ConvertFrom-Inline $_ }) -join "`n" }
            'code' { $b.Text }
            'table' { $b.Text }
        }
    }
}

function ConvertFrom-YamlBlock {
    param([string] $Text)
    $h = [ordered]@{}
    foreach ($line in ($Text -split "`n")) {
        if ($line -match '^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$') { $h[$Matches[1]] = $Matches[2] }
    }
    return $h
}

function Test-Blank { param($Value) return ($null -eq $Value) -or ([string]::IsNullOrWhiteSpace([string]$Value)) }

function Test-InParameterSet {
    param($Metadata, [string] $SetName)
    $sets = $Metadata['Parameter Sets']
    if ($sets -eq '(All)') { return $true }
    return ($sets -split '\s*,\s*') -contains $SetName
}

function Read-SyntaxLine {
    # Parses one PlatyPS syntax line into ordered @{ Name; Type; Required; Positional }.
    param([string] $Text)
    $rx = '\[\[-(?<opos>\w+)\]\s*<(?<optype>[^>]+)>\]' +
          '|\[-(?<rpos>\w+)\]\s*<(?<rptype>[^>]+)>' +
          '|\[-(?<onamed>\w+)(?:\s+<(?<ontype>[^>]+)>)?\]' +
          '|(?<![\w\[])-(?<rnamed>\w+)(?:\s+<(?<rntype>[^>]+)>)?'
    foreach ($m in [regex]::Matches($Text, $rx)) {
        $g = $m.Groups
        if ($g['opos'].Success) { @{ Name = $g['opos'].Value; Type = $g['optype'].Value; Required = $false; Positional = $true } }
        elseif ($g['rpos'].Success) { @{ Name = $g['rpos'].Value; Type = $g['rptype'].Value; Required = $true; Positional = $true } }
        elseif ($g['onamed'].Success) { @{ Name = $g['onamed'].Value; Type = $g['ontype'].Value; Required = $false; Positional = $false } }
        else { @{ Name = $g['rnamed'].Value; Type = $g['rntype'].Value; Required = $true; Positional = $false } }
    }
}

function Read-CommandPage {
    # Reads one cmdlet page into a hashtable; adds messages to $Problems instead of throwing.
    param([System.IO.FileInfo] $File, [System.Collections.Generic.List[string]] $Problems, [string] $HelpFileName)

    $where = $File.Name
    $complain = { param($msg) $Problems.Add("${where}: $msg") }

    $lines = [string[]]((Get-Content -LiteralPath $File.FullName -Raw) -replace "`r`n?", "`n" -split "`n")
    $fm = Split-FrontMatter $lines
    if ($null -eq $fm.Meta) { & $complain 'no YAML front matter (--- ... ---)'; $meta = @{} } else { $meta = $fm.Meta }
    if (-not $meta.Contains('external help file')) { & $complain "front matter has no 'external help file'" }
    elseif ($meta['external help file'] -ne $HelpFileName) { & $complain "external help file is '$($meta['external help file'])', expected '$HelpFileName'" }
    if ($meta.Contains('schema') -and $meta['schema'] -ne '2.0.0') { & $complain "schema '$($meta['schema'])' is not 2.0.0" }

    $outline = Get-MarkdownOutline -Lines $fm.Lines -Offset $fm.Offset
    $h1 = @($outline | Where-Object { $_.Level -eq 1 })
    $name = $File.BaseName
    if ($h1.Count -ne 1) { & $complain 'needs exactly one "# <CmdletName>" heading' }
    elseif ($h1[0].Title -ne $name) { & $complain "heading '# $($h1[0].Title)' does not match the file name" }

    # Group H2 sections and their H3 children.
    $sections = [ordered]@{}
    $h2 = $null
    foreach ($node in $outline) {
        if ($node.Level -eq 2) {
            $key = $node.Title.ToUpperInvariant()
            if ($sections.Contains($key)) { & $complain "section '## $($node.Title)' appears twice" }
            $h2 = @{ Title = $node.Title; Lines = $node.Lines; Children = [System.Collections.Generic.List[object]]::new() }
            $sections[$key] = $h2
        }
        elseif ($node.Level -ge 3) {
            if ($null -eq $h2) { & $complain "heading '$($node.Title)' (line $($node.LineNumber)) is outside any ## section"; continue }
            $h2.Children.Add($node)
        }
        elseif ($node.Level -eq 0 -and ($node.Lines -join '').Trim()) {
            & $complain 'text before the first heading'
        }
    }

    $page = @{
        Name          = $name
        File          = $File.FullName
        OnlineVersion = if ($meta.Contains('online version')) { $meta['online version'] } else { '' }
        Synopsis      = @()
        Description   = @()
        Syntax        = [System.Collections.Generic.List[object]]::new()
        Examples      = [System.Collections.Generic.List[object]]::new()
        Parameters    = [System.Collections.Generic.List[object]]::new()
        Inputs        = [System.Collections.Generic.List[object]]::new()
        Outputs       = [System.Collections.Generic.List[object]]::new()
        Notes         = @()
        Links         = [System.Collections.Generic.List[object]]::new()
    }
    if ($name -notmatch '^(\w+)-(\w+)$') { & $complain "'$name' is not a Verb-Noun name" }
    else { $page.Verb = $Matches[1]; $page.Noun = $Matches[2] }

    # SYNOPSIS / DESCRIPTION
    foreach ($key in 'SYNOPSIS', 'DESCRIPTION') {
        if (-not $sections.Contains($key)) { & $complain "missing ## $key"; continue }
        $paras = @(Get-BlockParagraphs (Get-MarkdownBlocks $sections[$key].Lines) | Where-Object { -not (Test-Blank $_) })
        if ($paras.Count -eq 0) { & $complain "## $key is empty" }
        if ($key -eq 'SYNOPSIS') { $page.Synopsis = $paras } else { $page.Description = $paras }
    }

    # PARAMETERS (read before SYNTAX, which is checked against it)
    $paramIndex = @{}
    if ($sections.Contains('PARAMETERS')) {
        foreach ($node in $sections['PARAMETERS'].Children) {
            if ($node.Level -ne 3) { continue }
            if ($node.Title -eq 'CommonParameters') { continue }
            if ($node.Title -notmatch '^-(\w+)$') { & $complain "parameter heading '### $($node.Title)' should be '### -Name'"; continue }
            $pname = $Matches[1]
            $blocks = @(Get-MarkdownBlocks $node.Lines)
            $yaml = @($blocks | Where-Object { $_.Kind -eq 'code' -and $_.Lang -eq 'yaml' })
            $text = @(Get-BlockParagraphs @($blocks | Where-Object { -not ($_.Kind -eq 'code' -and $_.Lang -eq 'yaml') }) | Where-Object { -not (Test-Blank $_) })
            if ($text.Count -eq 0) { & $complain "parameter -$pname has no description" }
            if ($yaml.Count -eq 0) { & $complain "parameter -$pname has no ```yaml metadata block"; continue }
            $metas = foreach ($y in $yaml) {
                $m = ConvertFrom-YamlBlock $y.Text
                foreach ($k in 'Type', 'Parameter Sets', 'Required', 'Position') {
                    if (Test-Blank $m[$k]) { & $complain "parameter -${pname}: metadata has no '$k'" }
                }
                foreach ($k in 'Required', 'Accept wildcard characters') {
                    if ($m.Contains($k) -and $m[$k] -notin 'True', 'False') { & $complain "parameter -${pname}: '$k' must be True or False" }
                }
                if (-not (Test-Blank $m['Position']) -and $m['Position'] -ne 'Named' -and $m['Position'] -notmatch '^\d+$') {
                    & $complain "parameter -${pname}: Position must be Named or a number"
                }
                $m
            }
            if ($paramIndex.ContainsKey($pname)) { & $complain "parameter -$pname is described twice"; continue }
            $param = @{ Name = $pname; Description = $text; Metadata = @($metas) }
            $page.Parameters.Add($param)
            $paramIndex[$pname] = $param
        }
    }
    else { & $complain 'missing ## PARAMETERS' }

    # SYNTAX: one code block per parameter set, under "### SetName" when there are several.
    if ($sections.Contains('SYNTAX')) {
        $syntax = $sections['SYNTAX']
        $sets = @()
        if ($syntax.Children.Count -eq 0) {
            $sets += @{ Name = '__AllParameterSets'; Lines = $syntax.Lines }
        }
        else {
            foreach ($c in $syntax.Children) { $sets += @{ Name = ($c.Title -replace '\s*\(Default\)\s*$', ''); Lines = $c.Lines } }
        }
        foreach ($set in $sets) {
            $code = @(Get-MarkdownBlocks $set.Lines | Where-Object { $_.Kind -eq 'code' })
            if ($code.Count -ne 1) { & $complain "syntax of parameter set '$($set.Name)' needs exactly one code block"; continue }
            $text = ($code[0].Text -replace '\s+', ' ').Trim()
            if (-not $text.StartsWith("$name ") -and $text -ne $name) { & $complain "syntax of parameter set '$($set.Name)' does not start with '$name'"; continue }
            $items = @(Read-SyntaxLine $text.Substring($name.Length))
            foreach ($it in $items) {
                if (-not $paramIndex.ContainsKey($it.Name)) { & $complain "syntax names -$($it.Name), which is not described under ## PARAMETERS"; continue }
                $md = @($paramIndex[$it.Name].Metadata | Where-Object { Test-InParameterSet $_ $set.Name })
                if ($md.Count -eq 0) { & $complain "syntax of set '$($set.Name)' names -$($it.Name), whose metadata does not list that set"; continue }
                $md = $md[0]
                $it.Metadata = $md
                if (($md['Required'] -eq 'True') -ne $it.Required) { & $complain "-$($it.Name): syntax and 'Required: $($md['Required'])' disagree" }
                if (($md['Position'] -ne 'Named') -ne $it.Positional) { & $complain "-$($it.Name): syntax and 'Position: $($md['Position'])' disagree" }
                $isSwitch = $md['Type'] -eq 'SwitchParameter'
                if (-not $isSwitch -and $it.Type -ne $md['Type']) { & $complain "-$($it.Name): syntax type <$($it.Type)> and 'Type: $($md['Type'])' disagree" }
                if ($isSwitch -and -not (Test-Blank $it.Type)) { & $complain "-$($it.Name) is a switch; the syntax must not give it a <type>" }
            }
            foreach ($p in $page.Parameters) {
                if (@($p.Metadata | Where-Object { Test-InParameterSet $_ $set.Name }).Count -gt 0 -and @($items | Where-Object { $_.Name -eq $p.Name }).Count -eq 0) {
                    & $complain "-$($p.Name) belongs to set '$($set.Name)' but is missing from its syntax block"
                }
            }
            $page.Syntax.Add(@{ Name = $set.Name; Items = $items })
        }
    }
    else { & $complain 'missing ## SYNTAX' }

    # EXAMPLES: "### Example N: title", code first, then text (later code blocks stay in the text).
    if ($sections.Contains('EXAMPLES')) {
        foreach ($node in $sections['EXAMPLES'].Children) {
            if ($node.Level -ne 3) { continue }
            $blocks = @(Get-MarkdownBlocks $node.Lines)
            $codeBlocks = [System.Collections.Generic.List[string]]::new()
            $k = 0
            while ($k -lt $blocks.Count -and $blocks[$k].Kind -eq 'code') { $codeBlocks.Add($blocks[$k].Text); $k++ }
            $rest = if ($k -lt $blocks.Count) { @($blocks[$k..($blocks.Count - 1)]) } else { @() }
            if ($codeBlocks.Count -eq 0) { & $complain "example '$($node.Title)' does not start with a code block" }
            $page.Examples.Add(@{
                    Title   = $node.Title
                    Code    = ($codeBlocks -join "`n`n")
                    Remarks = @(Get-BlockParagraphs $rest | Where-Object { -not (Test-Blank $_) })
                })
        }
    }
    if ($page.Examples.Count -eq 0) { & $complain 'has no example (## EXAMPLES with at least one ### Example)' }

    # INPUTS / OUTPUTS
    foreach ($pair in @(@('INPUTS', $page.Inputs), @('OUTPUTS', $page.Outputs))) {
        if (-not $sections.Contains($pair[0])) { continue }
        foreach ($node in $sections[$pair[0]].Children) {
            $pair[1].Add(@{ Name = $node.Title; Description = @(Get-BlockParagraphs (Get-MarkdownBlocks $node.Lines) | Where-Object { -not (Test-Blank $_) }) })
        }
    }

    if ($sections.Contains('NOTES')) {
        $page.Notes = @(Get-BlockParagraphs (Get-MarkdownBlocks $sections['NOTES'].Lines) | Where-Object { -not (Test-Blank $_) })
    }

    if ($sections.Contains('RELATED LINKS')) {
        foreach ($line in $sections['RELATED LINKS'].Lines) {
            $l = $line.Trim() -replace '^[-*+]\s+', ''
            if (-not $l) { continue }
            if ($l -match '^\[([^\]]+)\]\(([^)]*)\)') {
                $uri = if ($Matches[2] -match '^(https?|ftp)://') { $Matches[2] } else { '' }
                $page.Links.Add(@{ Text = $Matches[1]; Uri = $uri })
            }
            else { $page.Links.Add(@{ Text = $l; Uri = '' }) }
        }
    }

    return $page
}

# ---------------------------------------------------------------------------
# MAML writing
# ---------------------------------------------------------------------------

function Write-Paras {
    param([System.Xml.XmlWriter] $W, [string[]] $Paras)
    if (-not $Paras -or $Paras.Count -eq 0) { $W.WriteStartElement('maml', 'para', $ns.maml); $W.WriteEndElement(); return }
    foreach ($p in $Paras) { $W.WriteElementString('maml', 'para', $ns.maml, $p) }
}

function Write-Description {
    param([System.Xml.XmlWriter] $W, [string[]] $Paras)
    $W.WriteStartElement('maml', 'description', $ns.maml)
    Write-Paras $W $Paras
    $W.WriteEndElement()
}

function Get-PipelineInput {
    param($Metadata)
    $v = $Metadata['Accept pipeline input']
    if (Test-Blank $v) { return 'False' }
    return $v
}

function Write-Parameter {
    param([System.Xml.XmlWriter] $W, $Param, $Metadata, [bool] $InSyntax)
    $type = $Metadata['Type']
    $isSwitch = $type -eq 'SwitchParameter'
    $aliases = $Metadata['Aliases']
    if (Test-Blank $aliases -or $aliases -eq 'None') { $aliases = 'none' }
    $position = if ($Metadata['Position'] -eq 'Named') { 'named' } else { $Metadata['Position'] }
    $globbing = if ($Metadata['Accept wildcard characters'] -eq 'True') { 'true' } else { 'false' }
    $default = $Metadata['Default value']
    if (Test-Blank $default) { $default = if ($isSwitch) { 'False' } else { 'None' } }

    $W.WriteStartElement('command', 'parameter', $ns.command)
    $W.WriteAttributeString('required', $Metadata['Required'].ToLowerInvariant())
    $W.WriteAttributeString('variableLength', 'true')
    $W.WriteAttributeString('globbing', $globbing)
    $W.WriteAttributeString('pipelineInput', (Get-PipelineInput $Metadata))
    $W.WriteAttributeString('position', $position)
    $W.WriteAttributeString('aliases', $aliases)
    $W.WriteElementString('maml', 'name', $ns.maml, $Param.Name)
    Write-Description $W $Param.Description

    $accepted = $Metadata['Accepted values']
    if (-not (Test-Blank $accepted)) {
        $W.WriteStartElement('command', 'parameterValueGroup', $ns.command)
        foreach ($v in ($accepted -split '\s*,\s*')) {
            $W.WriteStartElement('command', 'parameterValue', $ns.command)
            $W.WriteAttributeString('required', 'false')
            $W.WriteAttributeString('command', 'variableLength', $ns.command, 'false')
            $W.WriteString($v)
            $W.WriteEndElement()
        }
        $W.WriteEndElement()
    }
    # A switch has no value: Get-Help shows "[-Force]", not "[-Force <SwitchParameter>]", in the syntax.
    if (-not ($isSwitch -and $InSyntax)) {
        $W.WriteStartElement('command', 'parameterValue', $ns.command)
        $W.WriteAttributeString('required', $(if ($isSwitch) { 'false' } else { 'true' }))
        $W.WriteAttributeString('variableLength', $(if ($type.EndsWith('[]')) { 'true' } else { 'false' }))
        $W.WriteString($type)
        $W.WriteEndElement()
    }
    $W.WriteStartElement('dev', 'type', $ns.dev)
    $W.WriteElementString('maml', 'name', $ns.maml, $type)
    $W.WriteStartElement('maml', 'uri', $ns.maml); $W.WriteEndElement()
    $W.WriteEndElement()
    $W.WriteElementString('dev', 'defaultValue', $ns.dev, $default)
    $W.WriteEndElement()
}

function Write-TypeList {
    param([System.Xml.XmlWriter] $W, [string] $Outer, [string] $Inner, $Types)
    $W.WriteStartElement('command', $Outer, $ns.command)
    foreach ($t in $Types) {
        $W.WriteStartElement('command', $Inner, $ns.command)
        $W.WriteStartElement('dev', 'type', $ns.dev)
        $W.WriteElementString('maml', 'name', $ns.maml, $t.Name)
        $W.WriteEndElement()
        Write-Description $W $t.Description
        $W.WriteEndElement()
    }
    $W.WriteEndElement()
}

function Write-Command {
    param([System.Xml.XmlWriter] $W, $Page)
    $W.WriteStartElement('command', 'command', $ns.command)
    $W.WriteAttributeString('xmlns', 'maml', $null, $ns.maml)
    $W.WriteAttributeString('xmlns', 'command', $null, $ns.command)
    $W.WriteAttributeString('xmlns', 'dev', $null, $ns.dev)
    $W.WriteAttributeString('xmlns', 'MSHelp', $null, $ns.MSHelp)

    $W.WriteStartElement('command', 'details', $ns.command)
    $W.WriteElementString('command', 'name', $ns.command, $Page.Name)
    $W.WriteElementString('command', 'verb', $ns.command, $Page.Verb)
    $W.WriteElementString('command', 'noun', $ns.command, $Page.Noun)
    Write-Description $W $Page.Synopsis
    $W.WriteEndElement()

    Write-Description $W $Page.Description

    $W.WriteStartElement('command', 'syntax', $ns.command)
    foreach ($set in $Page.Syntax) {
        $W.WriteStartElement('command', 'syntaxItem', $ns.command)
        $W.WriteElementString('maml', 'name', $ns.maml, $Page.Name)
        foreach ($it in $set.Items) {
            $param = $Page.Parameters | Where-Object { $_.Name -eq $it.Name } | Select-Object -First 1
            if ($null -eq $param -or -not $it.ContainsKey('Metadata')) { continue }
            Write-Parameter $W $param $it.Metadata $true
        }
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'parameters', $ns.command)
    foreach ($param in $Page.Parameters) { Write-Parameter $W $param $param.Metadata[0] $false }
    $W.WriteEndElement()

    Write-TypeList $W 'inputTypes' 'inputType' $Page.Inputs
    Write-TypeList $W 'returnValues' 'returnValue' $Page.Outputs

    if ($Page.Notes.Count -gt 0) {
        $W.WriteStartElement('maml', 'alertSet', $ns.maml)
        $W.WriteStartElement('maml', 'alert', $ns.maml)
        Write-Paras $W $Page.Notes
        $W.WriteEndElement()
        $W.WriteEndElement()
    }

    $W.WriteStartElement('command', 'examples', $ns.command)
    foreach ($ex in $Page.Examples) {
        $W.WriteStartElement('command', 'example', $ns.command)
        $W.WriteElementString('maml', 'title', $ns.maml, "---------- $($ex.Title) ----------")
        $W.WriteElementString('dev', 'code', $ns.dev, $ex.Code)
        $W.WriteStartElement('dev', 'remarks', $ns.dev)
        # The trailing empty paragraph puts a blank line between this example and the next title.
        Write-Paras $W (@($ex.Remarks) + '')
        $W.WriteEndElement()
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'relatedLinks', $ns.command)
    if (-not (Test-Blank $Page.OnlineVersion)) {
        $W.WriteStartElement('maml', 'navigationLink', $ns.maml)
        $W.WriteElementString('maml', 'linkText', $ns.maml, 'Online Version:')
        $W.WriteElementString('maml', 'uri', $ns.maml, $Page.OnlineVersion)
        $W.WriteEndElement()
    }
    foreach ($l in $Page.Links) {
        $W.WriteStartElement('maml', 'navigationLink', $ns.maml)
        $W.WriteElementString('maml', 'linkText', $ns.maml, $l.Text)
        $W.WriteElementString('maml', 'uri', $ns.maml, $l.Uri)
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteEndElement()
}

# ---------------------------------------------------------------------------
# about_*.md -> about_*.help.txt
# ---------------------------------------------------------------------------

function Format-Wrapped {
    param([string] $Text, [int] $Indent, [int] $HangingIndent = $Indent)
    # A `code span` is never broken across lines, so commands stay whole for copy and paste.
    $words = [regex]::Matches($Text, '(?:`[^`]*`|\S)+') | ForEach-Object Value
    $lines = [System.Collections.Generic.List[string]]::new()
    $line = ' ' * $Indent
    $empty = $true
    foreach ($w in $words) {
        if (-not $empty -and $line.Length + 1 + $w.Length -gt $AboutWidth) {
            $lines.Add($line)
            $line = (' ' * $HangingIndent) + $w
        }
        elseif ($empty) { $line += $w; $empty = $false }
        else { $line += ' ' + $w }
    }
    if (-not $empty) { $lines.Add($line) }
    return $lines
}

function ConvertTo-AboutText {
    param([System.IO.FileInfo] $File, [System.Collections.Generic.List[string]] $Problems)
    $where = $File.Name
    $lines = [string[]]((Get-Content -LiteralPath $File.FullName -Raw) -replace "`r`n?", "`n" -split "`n")
    $fm = Split-FrontMatter $lines
    $outline = Get-MarkdownOutline -Lines $fm.Lines -Offset $fm.Offset
    $topic = $File.BaseName

    $h1 = @($outline | Where-Object { $_.Level -eq 1 })
    if ($h1.Count -ne 1 -or $h1[0].Title -ne $topic) { $Problems.Add("${where}: needs exactly one heading '# $topic'") }
    $titles = @($outline | Where-Object { $_.Level -eq 2 } | ForEach-Object { $_.Title.ToUpperInvariant() })
    foreach ($required in 'SHORT DESCRIPTION', 'LONG DESCRIPTION') {
        if ($titles -notcontains $required) { $Problems.Add("${where}: missing ## $required") }
    }

    $out = [System.Collections.Generic.List[string]]::new()
    $out.Add('TOPIC')
    $out.Add("    $topic")
    foreach ($node in $outline) {
        if ($node.Level -le 1) { continue }
        $out.Add('')
        switch ($node.Level) {
            2 { $out.Add($node.Title.ToUpperInvariant()) }
            3 { $out.Add('  ' + $node.Title) }
            default { $out.Add('    ' + $node.Title) }
        }
        $firstBlock = $true
        foreach ($b in (Get-MarkdownBlocks $node.Lines)) {
            # The text starts on the line after its heading; blocks are separated by a blank line.
            if (-not $firstBlock) { $out.Add('') }
            $firstBlock = $false
            switch ($b.Kind) {
                'para' { $out.AddRange([string[]](Format-Wrapped (ConvertFrom-Inline $b.Text) 4)) }
                'list' {
                    foreach ($item in $b.Items) {
                        $item -match '^(\S+)\s' | Out-Null
                        $out.AddRange([string[]](Format-Wrapped (ConvertFrom-Inline $item) 4 (4 + $Matches[1].Length + 1)))
                    }
                }
                default { foreach ($l in ($b.Text -split "`n")) { $out.Add(('        ' + $l).TrimEnd()) } }
            }
        }
    }
    return (($out -join "`n").TrimEnd() + "`n")
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

$source = Get-Item -LiteralPath $MarkdownPath
if (-not $source.PSIsContainer) { throw "MarkdownPath '$MarkdownPath' is not a folder." }
$helpFileName = Split-Path -Leaf $OutputPath
$outDir = Split-Path -Parent ([System.IO.Path]::GetFullPath($OutputPath, (Get-Location).ProviderPath))

$problems = [System.Collections.Generic.List[string]]::new()
$pages = [System.Collections.Generic.List[object]]::new()
$abouts = [ordered]@{}

foreach ($file in (Get-ChildItem -LiteralPath $source.FullName -Filter '*.md' -File | Sort-Object Name)) {
    try {
        if ($file.BaseName -like 'about_*') {
            $abouts[$file.BaseName] = ConvertTo-AboutText -File $file -Problems $problems
        }
        elseif ($file.BaseName -match '^\w+-\w+$') {
            $pages.Add((Read-CommandPage -File $file -Problems $problems -HelpFileName $helpFileName))
        }
        else {
            Write-Verbose "Skipping $($file.Name): neither a cmdlet page nor an about topic."
        }
    }
    catch {
        # A converter bug or an unreadable file: report it with the others, and where it happened with -Debug.
        $problems.Add("$($file.Name): $($_.Exception.Message)")
        Write-Debug $_.ScriptStackTrace
    }
}

if ($pages.Count -eq 0) { $problems.Add("no cmdlet page (<Verb>-<Noun>.md) found in '$MarkdownPath'") }

if ($problems.Count -gt 0) {
    throw ("Help markdown in '$MarkdownPath' has {0} problem(s):`n  {1}" -f $problems.Count, ($problems -join "`n  "))
}

$null = New-Item -ItemType Directory -Path $outDir -Force
$outFile = Join-Path $outDir $helpFileName

$settings = [System.Xml.XmlWriterSettings]::new()
$settings.Indent = $true
$settings.IndentChars = '  '
$settings.Encoding = [System.Text.UTF8Encoding]::new($false)
$settings.NewLineChars = "`n"
$writer = [System.Xml.XmlWriter]::Create($outFile, $settings)
try {
    $writer.WriteStartDocument()
    $writer.WriteStartElement('helpItems', $ns.msh)
    $writer.WriteAttributeString('schema', 'maml')
    foreach ($page in $pages) { Write-Command $writer $page }
    $writer.WriteEndElement()
    $writer.WriteEndDocument()
}
finally {
    $writer.Dispose()
}

# Read it back: a malformed file would make Get-Help fall back to the generated help without a word.
$check = [xml]::new()
$check.Load($outFile)
$count = $check.SelectNodes('/*[local-name()="helpItems"]/*[local-name()="command"]').Count
if ($count -ne $pages.Count) { throw "wrote $count command(s) to $outFile, expected $($pages.Count)" }
Write-Verbose "Wrote $count command(s) to $outFile"

foreach ($topic in $abouts.Keys) {
    $path = Join-Path $outDir "$topic.help.txt"
    [System.IO.File]::WriteAllText($path, $abouts[$topic], [System.Text.UTF8Encoding]::new($false))
    Write-Verbose "Wrote $path"
}

[pscustomobject]@{
    HelpFile    = $outFile
    Commands    = @($pages | ForEach-Object Name)
    AboutTopics = @($abouts.Keys | ForEach-Object { Join-Path $outDir "$_.help.txt" })
}
