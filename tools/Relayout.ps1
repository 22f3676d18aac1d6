#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Puts src/OdaKvmBackup.Core into the layout that shows the architecture (issue 14, point 5). Re-runnable.
.DESCRIPTION
    Run from the repository root: dotnet pwsh -NoProfile -File tools/Relayout.ps1
      1. moves (git mv) every .cs file of the core to the folder the table below gives it; a file already there is left
         alone; a file the table does not know stops the script before anything changes (give it a row);
      2. sets each core file's file-scoped namespace to follow its folder (Run/ -> OdaKvmBackup.Core.Run);
      3. writes GlobalUsings.cs (every core namespace) in the core and in every project that references it, removes
         their now-dead `using OdaKvmBackup.Core.X;` lines, and rewrites fully qualified type names and moved file
         paths everywhere else (format file, docs, README, Pester tests, tools, Stryker's config);
      4. makes every top-level core type internal except those in $PublicTypes (what a PowerShell user sees and what
         their properties and the format file need), adds InternalsVisibleTo for each project that references the
         core, then builds the cmdlet project and turns each member that now exposes an internal type
         (CS0050/CS0051/CS0053, CS0507 for its overrides) from protected into private protected; a public member
         that does is named for a hand fix; a [OdaKvmBackup.Core...] type literal in a PowerShell file that names an
         internal type is named too;
      5. runs dotnet format whitespace on the solution (the check build.ps1 -Task Format makes).
    It does not build the tests or commit: review with git status / git diff, then build and test.
#>
[CmdletBinding()]
param([switch] $SkipFormat)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$Root = (Get-Location).Path
$Core = Join-Path $Root 'src/OdaKvmBackup.Core'
if (-not (Test-Path (Join-Path $Core 'OdaKvmBackup.Core.csproj'))) { throw 'Run tools/Relayout.ps1 from the repository root.' }
$Utf8 = [Text.UTF8Encoding]::new($false)

# ---- The layout: file name -> its place under src/OdaKvmBackup.Core (a different name renames it). -------------------
# Dependencies allowed (checked by tests/Unit/OdaKvmBackup.Core.Tests/LayoutTests.cs): the root, Paths, Copies, Host and
# Stores are the bottom (they use nothing of RunState, Run, Steps, WayBack); RunState (the state of a run in one place)
# uses the bottom only; WayBack the bottom and RunState; Steps those and WayBack; Run everything.
$Layout = [ordered]@{
    # The root: what every folder uses.
    'AssemblyInfo.cs'                = 'AssemblyInfo.cs'
    'GlobalUsings.cs'                = 'GlobalUsings.cs'
    'BackupException.cs'             = 'BackupException.cs'
    'ErrorIds.cs'                    = 'ErrorIds.cs'
    # Paths: the one authority for names and paths (set and retention layout, snapshot name, state files, 0600/0700).
    'BackupNames.cs'                 = 'Paths/BackupNames.cs'
    'FileSystemPaths.cs'             = 'Paths/FileSystemPaths.cs'
    'StateDirectory.cs'              = 'Paths/StateDirectory.cs'
    'PrivateFiles.cs'                = 'Paths/PrivateFiles.cs'
    # Run: the run, its record (journal), lock, preflight, the way back (closer, repair), signals, its errors.
    'BackupRun.cs'                   = 'Run/BackupRun.cs'
    'RunRecord.cs'                   = 'RunState/RunRecord.cs'
    'DiskRecord.cs'                  = 'RunState/DiskRecord.cs'
    'BackupStage.cs'                 = 'RunState/BackupStage.cs'
    'RunJournal.cs'                  = 'RunState/RunJournal.cs'
    'RunErrors.cs'                   = 'RunState/RunErrors.cs'
    'DomainLock.cs'                  = 'RunState/DomainLock.cs'
    'Preflight.cs'                   = 'RunState/PreflightContext.cs'
    'PreflightContext.cs'            = 'RunState/PreflightContext.cs'
    'StopSignals.cs'                 = 'Run/StopSignals.cs'
    'HungUpTerminal.cs'              = 'Run/HungUpTerminal.cs'
    'HangUpProofWriter.cs'           = 'Run/HangUpProofWriter.cs'
    'RollbackOutcome.cs'             = 'RunState/RollbackOutcome.cs'
    'RunCloser.cs'                   = 'Run/RunCloser.cs'
    'RunLease.cs'                    = 'Run/RunLease.cs'
    'BackupRun.Steps.cs'             = 'Run/BackupRun.Steps.cs'
    'StepFailure.cs'                 = 'RunState/StepFailure.cs'
    'RepairService.cs'               = 'Run/RepairService.cs'
    'RepairAction.cs'                = 'Run/RepairAction.cs'
    # Steps: snapshot, copy, commit, retention, and the disk they carry through the pipeline.
    'VmDiskBackup.cs'                = 'Steps/VmDiskBackup.cs'
    'SnapshotService.cs'             = 'Steps/SnapshotService.cs'
    'SnapshotPlan.cs'                = 'Steps/SnapshotPlan.cs'
    'CopyService.cs'                 = 'Steps/CopyService.cs'
    'CopyDestinationCheck.cs'        = 'Steps/CopyDestinationCheck.cs'
    'OwnFolders.cs'                  = 'Steps/OwnFolders.cs'
    'CommitService.cs'               = 'Steps/CommitService.cs'
    'RetentionService.cs'            = 'Steps/RetentionService.cs'
    'RetentionBatch.cs'              = 'Steps/RetentionBatch.cs'
    'RetentionCheck.cs'              = 'Steps/RetentionCheck.cs'
    # WayBack: the catalog of sets and their manifests, verify, restore, boot test, prune.
    'BackupCatalog.cs'               = 'WayBack/BackupCatalog.cs'
    'BackupSetInfo.cs'               = 'WayBack/BackupSetInfo.cs'
    'BackupSet.cs'                   = 'WayBack/BackupSet.cs'
    'BackupSetStatus.cs'             = 'WayBack/BackupSetStatus.cs'
    'BackupConsistency.cs'           = 'RunState/BackupConsistency.cs'
    'ExcludedDisk.cs'                = 'RunState/ExcludedDisk.cs'
    'BackupManifest.cs'              = 'WayBack/BackupManifest.cs'
    'ManifestDisk.cs'                = 'WayBack/ManifestDisk.cs'
    'CheckedManifest.cs'             = 'WayBack/CheckedManifest.cs'
    'CopyInspection.cs'              = 'WayBack/CopyInspection.cs'
    'VerifyService.cs'               = 'WayBack/VerifyService.cs'
    'BackupSetTestResult.cs'         = 'WayBack/BackupSetTestResult.cs'
    'RestoreService.cs'              = 'WayBack/RestoreService.cs'
    'RestorePlan.cs'                 = 'WayBack/RestorePlan.cs'
    'RestoredBackup.cs'              = 'WayBack/RestoredBackup.cs'
    'HostPaths.cs'                   = 'WayBack/HostPaths.cs'
    'BootTestService.cs'             = 'WayBack/BootTestService.cs'
    'BootTestRecord.cs'              = 'WayBack/BootTestRecord.cs'
    'ConsoleLogReader.cs'            = 'WayBack/ConsoleLogReader.cs'
    'PrunePolicy.cs'                 = 'WayBack/PrunePolicy.cs'
    'PruneService.cs'                = 'WayBack/PruneService.cs'
    # Copies: moving and digesting bytes, used by the copy step, the way back and the stores (issue 15's digests).
    'SparseCopy.cs'                  = 'Copies/SparseCopy.cs'
    'StreamCopy.cs'                  = 'Copies/StreamCopy.cs'
    'RateMeter.cs'                   = 'Copies/RateMeter.cs'
    'RemoteCopyCheck.cs'             = 'Copies/RemoteCopyCheck.cs'
    'BlockDigestList.cs'             = 'Copies/BlockDigestList.cs'
    'BlockDigestListBuilder.cs'      = 'Copies/BlockDigestListBuilder.cs'
    # Host: virsh, qemu-img, domain XML, processes (the only CliWrap user), progress to the user.
    'VmDisk.cs'                      = 'Host/VmDisk.cs'
    'HostTools.cs'                   = 'Host/HostTools.cs'
    'VirshClient.cs'                 = 'Host/VirshClient.cs'
    'VirshArguments.cs'              = 'Host/VirshArguments.cs'
    'VirshErrors.cs'                 = 'Host/VirshErrors.cs'
    'VirshException.cs'              = 'Host/VirshException.cs'
    'DomainXml.cs'                   = 'Host/DomainXml.cs'
    'DomainXmlRewriter.cs'           = 'Host/DomainXmlRewriter.cs'
    'QemuImgClient.cs'               = 'Host/QemuImgClient.cs'
    'ProcessRunner.cs'               = 'Host/CliWrapProcessRunner.cs'
    'CliWrapProcessRunner.cs'        = 'Host/CliWrapProcessRunner.cs'
    'DuplexProcess.cs'               = 'Host/CliWrapProcessRunner.Duplex.cs'
    'CliWrapProcessRunner.Duplex.cs' = 'Host/CliWrapProcessRunner.Duplex.cs'
    'IDuplexProcess.cs'              = 'Host/IDuplexProcess.cs'
    'IProcessRunner.cs'              = 'Host/IProcessRunner.cs'
    'IOperationSink.cs'              = 'Host/IOperationSink.cs'
    'NullSink.cs'                    = 'Host/NullSink.cs'
    'ToolTimeouts.cs'                = 'Host/ToolTimeouts.cs'
    'ProgressIds.cs'                 = 'Host/ProgressIds.cs'
    # Stores: local and SSH stores; the SSH client and the SFTP protocol inside Stores/Ssh.
    'IBackupStore.cs'                = 'Stores/IBackupStore.cs'
    'BackupStores.cs'                = 'Stores/BackupStores.cs'
    'LocalBackupStore.cs'            = 'Stores/LocalBackupStore.cs'
    'StoreErrors.cs'                 = 'Stores/StoreErrors.cs'
    'SshBackupStore.cs'              = 'Stores/SshBackupStore.cs'
    'SshStoreFileReader.cs'          = 'Stores/SshStoreFileReader.cs'
    'SshStoreFileWriter.cs'          = 'Stores/SshStoreFileWriter.cs'
    'SmallFiles.cs'                  = 'Stores/SmallFiles.cs'
    'NativeFiles.cs'                 = 'Stores/NativeFiles.cs'
    'ServerScripts.cs'               = 'Stores/ServerScripts.cs'
    'FileClone.cs'                   = 'Stores/FileClone.cs'
    'SshClient.cs'                   = 'Stores/Ssh/SshClient.cs'
    'SshDestination.cs'              = 'Stores/Ssh/SshDestination.cs'
    'SshErrors.cs'                   = 'Stores/Ssh/SshErrors.cs'
    'SftpClient.cs'                  = 'Stores/Ssh/SftpClient.cs'
    'SftpConnection.cs'              = 'Stores/Ssh/SftpConnection.cs'
    'ReconnectAttempts.cs'           = 'Stores/Ssh/ReconnectAttempts.cs'
    'SftpLimits.cs'                  = 'Stores/Ssh/SftpLimits.cs'
    'SftpProtocol.cs'                = 'Stores/Ssh/SftpProtocol.cs'
    'SftpPacketReader.cs'            = 'Stores/Ssh/SftpPacketReader.cs'
    'SftpPacketWriter.cs'            = 'Stores/Ssh/SftpPacketWriter.cs'
    'SftpResponse.cs'                = 'Stores/Ssh/SftpResponse.cs'
    'SftpStatusException.cs'         = 'Stores/Ssh/SftpStatusException.cs'
    'PendingReply.cs'                = 'Stores/Ssh/PendingReply.cs'
}

# ---- The public surface: what a PowerShell user sees (output objects, errors) and what their members need. ---------
# Every other top-level type of the core becomes internal (the cmdlets, tests and tools see it through
# InternalsVisibleTo). FileSystemPaths stays public because the format file calls FileSystemPaths::FormatBytes.
$PublicTypes = @(
    'VmDisk', 'VmDiskBackup', 'BackupConsistency', 'BackupStage', 'BackupSetStatus',
    'BackupSetInfo', 'BackupSetDisk', 'BackupSetTestResult', 'DiskTestResult',
    'RestoredBackup', 'RestoredDisk', 'RemovedBackup', 'RepairAction',
    'ExcludedDisk', 'RestoreMode',
    'BackupException', 'BackupErrorCategory', 'ErrorIds', 'VirshException', 'VirshFailure', 'SftpStatusException', 'SftpStatusCode',
    'FileSystemPaths'
)

function Get-CoreFiles {
    Get-ChildItem -Path $Core -Recurse -File -Filter *.cs |
        Where-Object { $_.FullName -notmatch '[\\/](bin|obj)[\\/]' } |
        ForEach-Object { [IO.Path]::GetRelativePath($Core, $_.FullName).Replace('\', '/') }
}

function Read-Text([string] $path) { [IO.File]::ReadAllText($path) }
function Write-Text([string] $path, [string] $text) { [IO.File]::WriteAllText($path, $text, $Utf8) }

$TypeDecl = '(?m)^((?:(?:public|internal|static|sealed|abstract|file|readonly|partial|unsafe|ref)\s+)*)(class|struct|interface|enum|record(?:\s+struct|\s+class)?)\s+(\w+)'
$NamespaceDecl = '(?m)^namespace\s+(OdaKvmBackup\.Core(?:\.\w+)*)\s*;'

# ---- 1. Check every file has a place before anything changes. ----------------------------------------------------------
$files = @(Get-CoreFiles)
$unknown = @($files | Where-Object { -not $Layout.Contains((Split-Path $_ -Leaf)) })
if ($unknown) {
    throw "tools/Relayout.ps1 does not know where these files of src/OdaKvmBackup.Core belong: $($unknown -join ', '). Add a row for each to `$Layout (and, if it is a type a PowerShell user sees, to `$PublicTypes), then run it again."
}
$targets = @{}
foreach ($f in $files) {
    $to = $Layout[(Split-Path $f -Leaf)]
    if ($targets.ContainsKey($to)) { throw "Both $($targets[$to]) and $f would move to ${to}: split or rename one of them first." }
    $targets[$to] = $f
}

# The types each file declares under its old namespace, for the rename map of fully qualified names.
$typeMoves = [ordered]@{}
$fileMoves = [ordered]@{}
foreach ($f in $files) {
    $to = $Layout[(Split-Path $f -Leaf)]
    $text = Read-Text (Join-Path $Core $f)
    $old = [regex]::Match($text, $NamespaceDecl)
    if (-not $old.Success) {
        if ($text -match '(?m)^namespace\s') { throw "$f has a block-scoped namespace: make it file-scoped (namespace X;) first." }
        if ([regex]::IsMatch($text, $TypeDecl)) { throw "$f declares types outside a namespace." }
        continue
    }
    $folder = Split-Path $to -Parent
    $new = if ($folder) { 'OdaKvmBackup.Core.' + $folder.Replace('/', '.').Replace('\', '.') } else { 'OdaKvmBackup.Core' }
    foreach ($m in [regex]::Matches($text, $TypeDecl)) {
        $name = $m.Groups[3].Value
        if ($old.Groups[1].Value -ne $new) { $typeMoves["$($old.Groups[1].Value).$name"] = "$new.$name" }
    }
    if ($f -ne $to) { $fileMoves[$f] = $to }
}
$oldNamespaces = @($files | ForEach-Object { [regex]::Match((Read-Text (Join-Path $Core $_)), $NamespaceDecl) } |
        Where-Object Success | ForEach-Object { $_.Groups[1].Value } | Sort-Object -Unique)

# ---- 2. Move the files. --------------------------------------------------------------------------------------------------
foreach ($move in $fileMoves.GetEnumerator()) {
    $dest = Join-Path $Core $move.Value
    $null = New-Item -ItemType Directory -Force -Path (Split-Path $dest -Parent)
    & git mv -- (Join-Path $Core $move.Key) $dest
    if ($LASTEXITCODE -ne 0) { throw "git mv $($move.Key) $($move.Value) failed." }
    Write-Host "moved    src/OdaKvmBackup.Core/$($move.Key) -> $($move.Value)"
}
foreach ($dir in Get-ChildItem $Core -Recurse -Directory | Sort-Object { $_.FullName.Length } -Descending) {
    if ($dir.FullName -notmatch '[\\/](bin|obj)([\\/]|$)' -and -not (Get-ChildItem $dir.FullName -Force)) { Remove-Item $dir.FullName }
}

# ---- 3. Namespaces follow folders. ------------------------------------------------------------------------------------
$files = @(Get-CoreFiles)
$namespaces = [Collections.Generic.SortedSet[string]]::new()
foreach ($f in $files) {
    $path = Join-Path $Core $f
    $text = Read-Text $path
    $folder = Split-Path $f -Parent
    $ns = if ($folder) { 'OdaKvmBackup.Core.' + $folder.Replace('/', '.').Replace('\', '.') } else { 'OdaKvmBackup.Core' }
    if (-not [regex]::IsMatch($text, $NamespaceDecl)) { continue }
    $null = $namespaces.Add($ns)
    $new = [regex]::Replace($text, $NamespaceDecl, "namespace $ns;", 1)
    if ($new -ne $text) { Write-Text $path $new; Write-Host "namespace $f -> $ns" }
}
$allCoreNamespaces = @($namespaces) + $oldNamespaces | Sort-Object -Unique

# ---- 4. Global usings in every project that uses the core; dead usings out; qualified names and paths rewritten. ----
$projects = @(Get-ChildItem -Path (Join-Path $Root 'src'), (Join-Path $Root 'tests'), (Join-Path $Root 'tools') -Recurse -Filter *.csproj |
        Where-Object { $_.FullName -notmatch '[\\/](bin|obj)[\\/]' } |
        Where-Object { $_.BaseName -eq 'OdaKvmBackup.Core' -or (Read-Text $_.FullName) -match 'OdaKvmBackup(\.Core)?\.csproj' })
$usingLine = '(?m)^using\s+(' + (($allCoreNamespaces | ForEach-Object { [regex]::Escape($_) }) -join '|') + ')\s*;[ \t]*\r?\n'
foreach ($project in $projects) {
    $dir = $project.DirectoryName
    $lines = @('// Made by tools/Relayout.ps1 (run it again after adding a folder): every namespace of the core, in every file.')
    $lines += @($namespaces | Where-Object { $project.BaseName -ne 'OdaKvmBackup.Core' -or $_ -ne 'OdaKvmBackup.Core' } | ForEach-Object { "global using $_;" })
    $globalUsings = Join-Path $dir 'GlobalUsings.cs'
    if ((Test-Path $globalUsings) -and -not (Read-Text $globalUsings).StartsWith($lines[0])) { throw "$globalUsings was not made by this script: move its lines into another file first." }
    Write-Text $globalUsings (($lines -join "`n") + "`n")
    foreach ($cs in Get-ChildItem $dir -Recurse -Filter *.cs | Where-Object { $_.FullName -notmatch '[\\/](bin|obj)[\\/]' -and $_.Name -ne 'GlobalUsings.cs' }) {
        $text = Read-Text $cs.FullName
        $new = [regex]::Replace($text, $usingLine, '')
        # a file that starts with a blank line after its usings went
        $new = [regex]::Replace($new, '^(\r?\n)+', '')
        if ($new -ne $text) { Write-Text $cs.FullName $new }
    }
}
Write-Host "global usings in $(($projects | ForEach-Object Name) -join ', ')"

# Fully qualified type names (C#, format file, docs, Pester, tools) and the moved files' paths (Stryker's config, docs).
$tracked = @(& git ls-files -- src tests tools module docs README.md build.ps1 .ci | Where-Object { $_ -match '\.(cs|ps1|psm1|psd1|ps1xml|md|json|txt|yml|yaml|xml)$' -and $_ -ne 'tools/Relayout.ps1' })
$typePattern = if ($typeMoves.Count) { '\b(' + (($typeMoves.Keys | Sort-Object Length -Descending | ForEach-Object { [regex]::Escape($_) }) -join '|') + ')\b' }
$oldSuffixes = @($typeMoves.Keys | ForEach-Object { $_.Substring('OdaKvmBackup.Core.'.Length) -replace '\.\w+$' } | Sort-Object -Unique | Sort-Object Length -Descending)
$relativePattern = if ($oldSuffixes) { '(?<![\w.])((?:OdaKvmBackup\.)?(?:Core\.)?)(' + (($oldSuffixes | ForEach-Object { [regex]::Escape($_) }) -join '|') + ')\.(\w+)\b' }
$pathPattern = if ($fileMoves.Count) { 'OdaKvmBackup\.Core/(' + (($fileMoves.Keys | Sort-Object Length -Descending | ForEach-Object { [regex]::Escape($_) }) -join '|') + ')\b' }
foreach ($file in $tracked) {
    $path = Join-Path $Root $file
    if (-not (Test-Path $path)) { continue }
    $text = Read-Text $path
    $new = $text
    if ($typePattern) { $new = [regex]::Replace($new, $typePattern, { param($m) $typeMoves[$m.Value] }) }
    if ($relativePattern -and $file.EndsWith('.cs')) {
        # Backup.FileSystemPaths or Core.Storage.IBackupStore, as code inside OdaKvmBackup.* may write them
        $new = [regex]::Replace($new, $relativePattern, {
                param($m)
                $full = "OdaKvmBackup.Core.$($m.Groups[2].Value).$($m.Groups[3].Value)"
                if ($typeMoves.Contains($full)) { $m.Groups[1].Value + $typeMoves[$full].Substring('OdaKvmBackup.Core.'.Length) } else { $m.Value }
            })
    }
    if ($pathPattern) { $new = [regex]::Replace($new, $pathPattern, { param($m) 'OdaKvmBackup.Core/' + $fileMoves[$m.Groups[1].Value] }) }
    if ($new -ne $text) { Write-Text $path $new; Write-Host "names    $file" }
}

# ---- 5. A small public surface. -------------------------------------------------------------------------------------------
foreach ($f in $files) {
    $path = Join-Path $Core $f
    $text = Read-Text $path
    $new = [regex]::Replace($text, $TypeDecl, {
            param($m)
            if ($m.Groups[1].Value -match '\bpublic\b' -and $m.Groups[3].Value -notin $PublicTypes) {
                ($m.Groups[1].Value -replace '\bpublic\b', 'internal') + $m.Groups[2].Value + ' ' + $m.Groups[3].Value
            } else { $m.Value }
        })
    if ($new -ne $text) { Write-Text $path $new; Write-Host "internal $f" }
}
$csproj = Join-Path $Core 'OdaKvmBackup.Core.csproj'
$xml = Read-Text $csproj
foreach ($project in $projects | Where-Object BaseName -ne 'OdaKvmBackup.Core') {
    $assembly = if ((Read-Text $project.FullName) -match '<AssemblyName>([^<]+)</AssemblyName>') { $Matches[1] } else { $project.BaseName }
    if ($xml -notmatch "<InternalsVisibleTo Include=`"$([regex]::Escape($assembly))`"") {
        $xml = $xml -replace '(\s*)(<InternalsVisibleTo Include="[^"]+" />)(?![\s\S]*<InternalsVisibleTo)', "`$1`$2`$1<InternalsVisibleTo Include=`"$assembly`" />"
        Write-Host "InternalsVisibleTo $assembly"
    }
}
Write-Text $csproj $xml

# Members of the public cmdlet classes that now expose an internal core type: protected -> private protected (seen by
# the cmdlets of this assembly only), public -> internal. The compiler names them; repeat until it names none.
$cmdlets = Join-Path $Root 'src/OdaKvmBackup/OdaKvmBackup.csproj'
for ($round = 1; $round -le 6; $round++) {
    $output = & dotnet build $cmdlets -c Release -nologo -clp:NoSummary 2>&1 | Out-String
    $errors = @([regex]::Matches($output, '(?m)^(.+?\.cs)\((\d+),\d+\): error (CS0050|CS0051|CS0053|CS0507|CS0060)') |
            ForEach-Object { [pscustomobject]@{ File = $_.Groups[1].Value; Line = [int]$_.Groups[2].Value; Id = $_.Groups[3].Value } } |
            Sort-Object File, Line -Unique)
    if (-not $errors) {
        if ($LASTEXITCODE -ne 0) { Write-Warning "src/OdaKvmBackup does not build for another reason (fix it by hand):`n$(($output -split "`n" | Select-String ': error ' | Select-Object -Unique) -join "`n")" }
        break
    }
    $inCore = @($errors | Where-Object { $_.File -like "$Core*" })
    if ($inCore) {
        throw "Public core types expose types the script made internal; add those to `$PublicTypes (or make the member internal by hand):`n$(($inCore | ForEach-Object { "$($_.File):$($_.Line) $($_.Id)" }) -join "`n")"
    }
    $fixable = @($errors | Where-Object { ([IO.File]::ReadAllLines($_.File)[$_.Line - 1]) -match '^\s*protected\s' })
    foreach ($group in $errors | Group-Object File) {
        $lines = [IO.File]::ReadAllLines($group.Name)
        foreach ($e in $group.Group) {
            $i = $e.Line - 1
            $before = $lines[$i]
            # A public member (a cmdlet's parameter, say) is the user's surface: its type must be public, not it internal.
            if ($lines[$i] -match '^\s*protected\s' -and $lines[$i] -notmatch 'private protected') { $lines[$i] = $lines[$i] -replace '\bprotected\b', 'private protected' }
            if ($lines[$i] -ne $before) { Write-Host "access   $([IO.Path]::GetRelativePath($Root, $group.Name)):$($e.Line) ($($e.Id))" }
            else { Write-Warning "$($group.Name):$($e.Line): $($e.Id) the script cannot fix (a public member: add its type to `$PublicTypes, or fix it by hand): $before" }
        }
        [IO.File]::WriteAllLines($group.Name, $lines, $Utf8)
    }
    if (-not $fixable) { break }
}

# PowerShell reaches only public types by name: a [OdaKvmBackup.Core...] literal of an internal type would fail at run time.
foreach ($file in @(& git ls-files -- '*.ps1' '*.psm1' '*.ps1xml' | Where-Object { $_ -ne 'tools/Relayout.ps1' })) {
    $text = Read-Text (Join-Path $Root $file)
    foreach ($m in [regex]::Matches($text, '\[(OdaKvmBackup\.Core\.[\w.]+)\]')) {
        if (($m.Groups[1].Value -split '\.')[-1] -notin $PublicTypes) {
            Write-Warning "$file names [$($m.Groups[1].Value)], which is internal now: reach it through the loaded assembly (see tools/Measure-Backup.ps1) or make it public in `$PublicTypes."
        }
    }
}

# ---- 6. Format. --------------------------------------------------------------------------------------------------------------
if (-not $SkipFormat) {
    & dotnet format whitespace (Join-Path $Root 'OdaKvmBackup.sln')
    if ($LASTEXITCODE -ne 0) { throw 'dotnet format failed.' }
}
Write-Host 'Done. Review with git status and git diff, then: ./build.ps1 -Task Bootstrap,Build; dotnet test OdaKvmBackup.sln -c Release'
