#!/usr/bin/env pwsh
<#
.SYNOPSIS
    The README's main job: a hot backup of the running linux_vm with the one-liner, then what it produced.
.DESCRIPTION
    Runs, exactly as the README writes it:

        Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao

    then shows the objects, the backup set (files, apparent and allocated sizes, backup.json), virsh domblklist
    and snapshot-list of linux_vm, the retention folder, and e2fsck -fn of both copies. Every check is made with
    virsh, stat and e2fsck, not through the module. Exits 1 when a check fails: VM still on an overlay, snapshot
    metadata left, set not Complete, an overlay not retained, a file system not clean.
    Called by ./build.ps1 -Task Demo after Build and Lab (linux_vm running with its guest agent).
.EXAMPLE
    ./tools/Invoke-Demo.ps1 -ModulePath ./out/OdaKvmBackup/OdaKvmBackup.psd1
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string] $ModulePath
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

Import-Module (Resolve-Path -LiteralPath $ModulePath).Path -Force
Import-Module (Join-Path $PSScriptRoot '../tests/Lab/OdaKvmLab.psm1') -Force   # Test-LabImageFileSystem (e2fsck -fn)

$failures = [System.Collections.Generic.List[string]]::new()
function Fail([string] $What) { $failures.Add($What); Write-Host "  FAIL: $What" -ForegroundColor Red }
function Ok([string] $What) { Write-Host "  ok:   $What" -ForegroundColor Green }
function Head([string] $Title) { Write-Host ""; Write-Host "--- $Title" -ForegroundColor Cyan }

function Format-Size([long] $Bytes) {
    if ($Bytes -ge 1GB) { return '{0:0.0} GiB' -f ($Bytes / 1GB) }
    if ($Bytes -ge 1MB) { return '{0:0.0} MiB' -f ($Bytes / 1MB) }
    if ($Bytes -ge 1KB) { return '{0:0.0} KiB' -f ($Bytes / 1KB) }
    "$Bytes B"
}

function Get-AllocatedBytes([string] $Path) {
    $blocks, $unit = (& stat -c '%b %B' -- $Path) -split ' '
    [long]$blocks * [long]$unit
}

function Show-Folder([string] $Path) {
    Get-ChildItem -LiteralPath $Path -File -Force | Sort-Object Name | ForEach-Object {
        [pscustomobject]@{
            File      = $_.Name
            Apparent  = Format-Size $_.Length
            Allocated = Format-Size (Get-AllocatedBytes $_.FullName)
        }
    } | Format-Table -AutoSize | Out-String -Stream -Width 250 | Where-Object { $_ } | ForEach-Object { "  $_" } | Out-Host
}

function Invoke-Virsh([string[]] $Arguments) {
    $out = & virsh -c qemu:///system @Arguments 2>&1 | Out-String
    if ($LASTEXITCODE -ne 0) { throw "virsh $($Arguments -join ' ') failed ($LASTEXITCODE): $out" }
    $out
}

# Each disk's source and whether it still sits on a backing image, from the live or the saved domain XML.
function Get-DiskSource([string] $Domain, [switch] $Inactive) {
    $xml = [xml](Invoke-Virsh (@('dumpxml', $Domain) + @(if ($Inactive) { '--inactive' })))
    foreach ($disk in $xml.domain.devices.disk) {
        if ($disk.device -ne 'disk') { continue }
        [pscustomobject]@{
            Target  = $disk.target.dev
            Source  = $disk.source.file
            Backing = [bool]$disk.SelectSingleNode('backingStore/source')
        }
    }
}

New-Item -ItemType Directory -Force -Path /backup, /kvm/retencao | Out-Null

Head 'Hot backup of linux_vm (running), the one-liner:'
Write-Host '  Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao'
$result = @()
$Error.Clear()
$watch = [System.Diagnostics.Stopwatch]::StartNew()
try {
    # Errors are collected from $Error and listed below as FAIL lines, once each; warnings show as they come.
    $ErrorActionPreference = 'SilentlyContinue'
    $result = @(Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao)
}
catch { }   # a terminating error is in $Error too
finally { $ErrorActionPreference = 'Stop' }
$watch.Stop()
Write-Host ('  took {0:0.0} s' -f $watch.Elapsed.TotalSeconds)
$errors = @($Error | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
[array]::Reverse($errors)
foreach ($e in $errors) {
    $text = if ($e.ErrorDetails -and $e.ErrorDetails.Message) { $e.ErrorDetails.Message } else { $e.Exception.Message }
    $where = if ($e.InvocationInfo -and $e.InvocationInfo.MyCommand) { "$($e.InvocationInfo.MyCommand): " } else { '' }
    Fail "$where$text [$($e.FullyQualifiedErrorId -replace ',.*')]"
}

if ($result.Count -gt 0) {
    Head 'Objects it returned'
    $result | Format-Table DomainName, Target, Format, Stage, Consistency,
        @{ n = 'Copy'; e = { if ($_.BackupFile) { Split-Path -Leaf $_.BackupFile } } },
        @{ n = 'Data copied'; e = { Format-Size ([long]$_.CopiedBytes) }; a = 'Right' },
        @{ n = 'Source'; e = { $_.Source } } -AutoSize | Out-String -Stream -Width 250 | Where-Object { $_ } | ForEach-Object { "  $_" } | Out-Host
    $stages = @($result.Stage | Sort-Object -Unique)
    if ($stages.Count -eq 1 -and "$($stages[0])" -eq 'Retained') { Ok "$($result.Count) disks, every one Retained (snapshot, copy, commit, retention done)" }
    else { Fail "stages are $($stages -join ', '), not all Retained" }
}
else { Fail 'no objects came out of the pipeline: nothing was backed up' }

$set = if ($result.Count) { $result[0].BackupSet } else { $null }
if ($set -and (Test-Path -LiteralPath $set)) {
    Head "Backup set $set"
    Show-Folder $set
    $manifest = Get-Content -Raw -LiteralPath (Join-Path $set 'backup.json') | ConvertFrom-Json
    Write-Host "  backup.json: Status=$($manifest.Status) Consistency=$($manifest.Consistency) Disks=$(@($manifest.Disks).Count)"
    foreach ($d in $manifest.Disks) {
        Write-Host ('    {0}  {1,-5} {2,-16} data {3,9}  verified={4}  digest {5}...' -f $d.Target, $d.Format, $d.File, (Format-Size ([long]$d.DataBytes)), $d.Verified, ("$($d.ContentDigest)" + '                ').Substring(0, 16))
    }
    if ($manifest.Status -eq 'Complete') { Ok 'set is Complete' } else { Fail "set status is '$($manifest.Status)' $($manifest.Reason)" }
    if (@($manifest.Disks | Where-Object { -not $_.Verified }).Count -gt 0) { Fail 'a disk in backup.json is not Verified' }
    if (-not (Test-Path -LiteralPath (Join-Path $set 'domain.xml'))) { Fail 'domain.xml missing from the set' }
}
elseif ($result.Count) { Fail 'no backup set folder' }

Head 'virsh domblklist linux_vm (the VM writes to its own files again)'
(Invoke-Virsh @('domblklist', 'linux_vm')) -split "`n" | Where-Object { $_.Trim() } | ForEach-Object { "  $_" } | Out-Host
$live = @(Get-DiskSource linux_vm)
$saved = @(Get-DiskSource linux_vm -Inactive)
$onOwn = $true
foreach ($view in @(@{ Name = 'live'; Disks = $live }, @{ Name = 'saved definition'; Disks = $saved })) {
    foreach ($now in $view.Disks) {
        $own = ($result | Where-Object Target -eq $now.Target | Select-Object -First 1)
        $problem = if ($now.Backing) { 'sits on a backing image (an overlay)' }
        elseif ("$($now.Source)".EndsWith('.FILE_STAGE_BACKUP.TEMP')) { 'is on an overlay' }
        elseif ($own -and $now.Source -ne $own.Source) { "is not on its own file $($own.Source)" }
        if ($problem) { $onOwn = $false; Fail "$($now.Target) ($($view.Name)) $problem`: $($now.Source)" }
    }
}
if ($onOwn) { Ok 'every disk is on its own file, no backing chain, live and in the saved definition' }

Head 'virsh snapshot-list linux_vm (no snapshot metadata left)'
(Invoke-Virsh @('snapshot-list', 'linux_vm')) -split "`n" | Where-Object { $_.Trim() } | ForEach-Object { "  $_" } | Out-Host
$snapshots = @((Invoke-Virsh @('snapshot-list', 'linux_vm', '--name')) -split "`n" | ForEach-Object Trim | Where-Object { $_ })
if ($snapshots.Count -eq 0) { Ok 'no snapshot' } else { Fail "snapshots left: $($snapshots -join ', ')" }

$retained = if ($result.Count) { Join-Path '/kvm/retencao/linux_vm' $result[0].RunId } else { $null }
if ($retained -and (Test-Path -LiteralPath $retained)) {
    Head "Retention folder $retained (the overlays, with what the VM wrote during the backup)"
    Show-Folder $retained
    $moved = $true
    foreach ($disk in $result) {
        if (-not $disk.RetainedOverlay -or -not (Test-Path -LiteralPath $disk.RetainedOverlay) -or ($disk.Overlay -and (Test-Path -LiteralPath $disk.Overlay))) {
            $moved = $false
            Fail "overlay of $($disk.Target) not moved: $($disk.Overlay)"
        }
    }
    if ($moved) { Ok 'both overlays moved out of the disk folders' }
}
elseif ($result.Count) { Fail 'no retention folder for this run' }

if ($result.Count) { Head 'Consistency proof: e2fsck -fn on each copy (the guest file systems were frozen at the snapshot)' }
foreach ($disk in $result) {
    if (-not $disk.BackupFile -or -not (Test-Path -LiteralPath $disk.BackupFile)) { Fail "no copy of $($disk.Target)"; continue }
    $check = Test-LabImageFileSystem -Path $disk.BackupFile
    $summary = ($check.Output -split "`n" | Where-Object { $_ -match 'files .* blocks' } | Select-Object -Last 1)
    if ($check.Clean) { Ok "$($disk.Target): $summary" }
    else { Fail "$($disk.Target): e2fsck exit $($check.ExitCode)`n$($check.Output)" }
}

Write-Host ""
if ($failures.Count -eq 0) {
    Write-Host ('DEMO OK: linux_vm backed up hot in {0:0.0} s into {1}; VM on its own disks, set Complete, file systems clean.' -f $watch.Elapsed.TotalSeconds, $set) -ForegroundColor Green
    exit 0
}
Write-Host "DEMO FAILED: $($failures.Count) check(s) failed, see the FAIL lines above. First: $($failures[0])" -ForegroundColor Red
if (-not $onOwn) { Write-Host '  linux_vm may still write to an overlay: run Repair-KvmBackup -DomainName linux_vm' -ForegroundColor Red }
exit 1
