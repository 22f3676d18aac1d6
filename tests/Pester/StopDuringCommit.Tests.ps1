# A stop (Ctrl+C, PowerShell.Stop()) that arrives while one disk's copy is done and handed on to Invoke-BlockCommit,
# while the other disk's copy still runs (seen once in CI: that copy ran to its end and the set closed Complete).
# The stop must end the other copy at once: the pipeline returns within seconds, the set is Incomplete, the VM is on
# its own disks, and the set the copies were based on is untouched.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    # A command whose StopProcessing is slow (2 s). Run in a pipeline nested inside the backup's pipeline, it holds
    # PowerShell's stop there while the backup's pipeline, which sees the stop at its next write, unwinds and ends:
    # by the time the stop reaches the backup's pipeline, PowerShell calls no StopProcessing of its commands any more
    # (PipelineProcessor.Stop returns when the pipeline is already ending). The same happens when the thread that
    # stops is merely held up by a loaded host, as in CI; here it happens every time.
    Add-Type -TypeDefinition @'
using System.Management.Automation;
using System.Threading;
namespace OdaKvmStopTest
{
    [Cmdlet("Wait", "PipelineStop")]
    public sealed class WaitPipelineStopCommand : PSCmdlet
    {
        public static volatile bool Waiting;
        [Parameter(ValueFromPipeline = true)] public object InputObject { get; set; }
        protected override void ProcessRecord()
        {
            Waiting = true;
            while (!Stopping) Thread.Sleep(5);
            WriteObject(InputObject); // throws PipelineStoppedException
        }
        protected override void StopProcessing() => Thread.Sleep(2000);
    }
}
'@

    # Backs up linux_vm into $Backup in a runspace of this process, its copies throttled to 1 MiB/s (the boot disk's
    # 1 MiB of data takes a second, the data disk's 12 to 64 MiB as the guest left them take 12 s or more), with
    # $Tail between Invoke-BlockCommit and Move-OverlayToRetention; calls Stop() once $Ready is true, and tells what
    # was seen.
    function Invoke-StoppedBackup([string] $Backup, [string] $Retention, [string] $Tail, [scriptblock] $Ready) {
        $runspace = [runspacefactory]::CreateRunspace($Host)
        $runspace.Open()
        $ps = [powershell]::Create()
        $ps.Runspace = $runspace
        $null = $ps.AddScript(@"
Import-Module '$ModuleManifest'
Import-Module -Assembly ([OdaKvmStopTest.WaitPipelineStopCommand].Assembly)
Get-VmDisk linux_vm | New-KvmDiskSnapshot |
    Copy-VmDisk -Destination '$Backup' -BandwidthLimit 1 -Verbose |
    Invoke-BlockCommit -Verbose |$Tail
    Move-OverlayToRetention -Path '$Retention'
"@)
        $handle = $ps.BeginInvoke()
        try {
            Wait-Until { (& $Ready $ps) -or $handle.IsCompleted } 'the point of the stop' 120
            $said = @($ps.Streams.Verbose | ForEach-Object Message)
            $ended = $handle.IsCompleted
            $watch = [Diagnostics.Stopwatch]::StartNew()
            $ps.Stop()
            $seconds = $watch.Elapsed.TotalSeconds
            # What this process still holds open in the destination: a copy still running keeps its file open.
            $open = @(Get-ChildItem "/proc/$PID/fd" -ErrorAction SilentlyContinue | ForEach-Object {
                    try { $_.LinkTarget } catch { $null } } | Where-Object { $_ -and $_.StartsWith($Backup) })
            Write-Host "Stop() returned after $([math]::Round($seconds, 1)) s"
            [pscustomobject]@{ SaidBeforeStop = $said -join "`n"; EndedBeforeStop = $ended; StopSeconds = $seconds; OpenInBackup = $open
                Errors = @($ps.Streams.Error | ForEach-Object ToString) -join '; ' }
        }
        finally {
            $ps.Dispose()
            $runspace.Dispose()
        }
    }

    # A Complete set of linux_vm in $Backup (the base of the next run's copies); returns it with its files' hashes.
    function New-BaseSet([string] $Backup, [string] $Retention) {
        $base = Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $Backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $Retention
        (Get-KvmBackup -Path $Backup -DomainName linux_vm).Status | Should -Be 'Complete'
        Start-Sleep -Seconds 1.1   # the next run's id (the snapshot time, in seconds) must differ from the base's
        [pscustomobject]@{ Location = $base[0].BackupSet; Hashes = Get-BaseHashes $base[0].BackupSet }
    }

    function Get-BaseHashes([string] $Set) {
        Get-ChildItem -LiteralPath $Set -File -Recurse | Sort-Object FullName | Get-FileHash -Algorithm SHA256 | ForEach-Object { "$($_.Path) $($_.Hash)" }
    }
}
AfterAll { Reset-LabVmIfNeeded linux_vm }

Describe 'The pipeline stopped right after the first disk went through Invoke-BlockCommit, the other disk still copied (<Case>)' -ForEach @(
    @{ Case = 'stopped at once'; Tail = ''
        Ready = { param($ps) @($ps.Streams.Verbose | Where-Object { $_.InvocationInfo.MyCommand.Name -eq 'Invoke-BlockCommit' }).Count -gt 0 } }
    @{ Case = 'the stop reaches the backup''s pipeline once it is ending'; Tail = "`n    ForEach-Object { `$_ | Wait-PipelineStop } |"
        Ready = { param($ps) [OdaKvmStopTest.WaitPipelineStopCommand]::Waiting } }
) {
    BeforeAll {
        Reset-LabVmIfNeeded linux_vm
        $script:backup = New-TestFolder stop-during-commit
        $retention = New-TestFolder stop-during-commit-retention
        $script:base = New-BaseSet $backup $retention
        $script:seen = Invoke-StoppedBackup $backup $retention $Tail $Ready
    }

    It 'was stopped while the data disk was still being copied' {
        $seen.EndedBeforeStop | Should -BeFalse -Because "the pipeline must still run when it is stopped: $($seen.Errors)"
        $seen.SaidBeforeStop | Should -Match 'Copied vda of linux_vm'
        $seen.SaidBeforeStop | Should -Match 'writes to .* again|Commit overlay'
        $seen.SaidBeforeStop | Should -Not -Match 'Copied vdb of linux_vm'
    }

    It 'returns from Stop() within seconds, the data disk''s copy ended there (nothing left open in the destination)' {
        # 2 s of them in the slow StopProcessing of the second case; the copy, had it gone on, would take 10 s more.
        $seen.StopSeconds | Should -BeLessThan 6 -Because 'the copy still running (12 s or more at 1 MiB/s) must end at once'
        $seen.OpenInBackup | Should -BeNullOrEmpty
    }

    It 'leaves the stopped run''s set Incomplete, and no partial copy' {
        $sets = @(Get-KvmBackup -Path $backup -DomainName linux_vm)
        $sets.Count | Should -Be 2
        $stopped = $sets | Where-Object Location -ne $base.Location
        $stopped.Status | Should -Be 'Incomplete' -Because 'the copy of vdb was cut short by the stop'
        ($stopped.Disks | Where-Object Target -eq vdb).Verified | Should -BeFalse -Because 'the copy of vdb must not have run to its end'
        Get-ChildItem -Recurse -Filter '*.partial' -LiteralPath $backup | Should -BeNullOrEmpty
    }

    It 'puts the VM back on its own disks (no overlay, no backing chain, no snapshot metadata)' {
        Test-OnOwnDisks linux_vm | Should -BeTrue
        Get-SnapshotNames linux_vm | Should -BeNullOrEmpty
        (Invoke-Virsh @('domblklist', 'linux_vm')).StdOut | Should -Not -Match ([regex]::Escape($SnapshotName))
    }

    It 'leaves the base set as it was: Complete, every file byte for byte' {
        (Get-KvmBackup -Path $backup -DomainName linux_vm | Where-Object Location -eq $base.Location).Status | Should -Be 'Complete'
        Get-BaseHashes $base.Location | Should -Be $base.Hashes
    }
}
