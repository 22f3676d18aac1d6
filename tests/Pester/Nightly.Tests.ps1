# The nightly job as cron runs it: pwsh -File on the script shipped with the module, on the real lab.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    $script:Script = Join-Path (Split-Path $ModuleManifest) 'Scripts/Invoke-KvmNightlyBackup.ps1'
    $script:Pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])
    $script:Destination = New-TestFolder nightly-dest
    $script:Retention = New-TestFolder nightly-ret

    function Invoke-Nightly([string[]] $Arguments, [string] $Module = $ModuleManifest) {
        $out = & $Pwsh[0] $Pwsh[1] -NoProfile -NonInteractive -File $Script -Module $Module -Destination $Destination -RetentionPath $Retention @Arguments 2>&1 | Out-String
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $out }
    }
    function Get-Sets { @(Get-ChildItem -Directory (Join-Path $Destination 'linux_vm') -ErrorAction SilentlyContinue | Where-Object Name -Match '^\d{8}-\d{6}$') }
}

Describe 'Invoke-KvmNightlyBackup.ps1' {
    It 'backs up, keeps -KeepLast sets, and exits 0 when every VM was backed up' {
        foreach ($round in 1..3) {
            $r = Invoke-Nightly @('-DomainName', 'linux_vm', '-KeepLast', '2', '-TestLatest')
            $r.ExitCode | Should -Be 0 -Because $r.Output
            Start-Sleep -Seconds 1   # one run id per second
        }
        $sets = Get-Sets
        $sets.Count | Should -Be 2 -Because 'three runs, -KeepLast 2'
        foreach ($set in $sets) { (Get-Content -Raw (Join-Path $set.FullName 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete' }
        $r.Output | Should -Match 'Backed up: linux_vm'
        $r.Output | Should -Match 'Failed:\s+none'
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }

    It 'writes its log next to the backups, private, and exits 1 naming the VM that failed while the others are backed up' {
        $before = (Get-Sets).Count
        $r = Invoke-Nightly @('-DomainName', 'linux_vm,no_such_vm', '-KeepLast', '5')   # as cron passes a list
        $r.ExitCode | Should -Be 1 -Because $r.Output
        (Get-Sets).Count | Should -Be ($before + 1) -Because 'linux_vm was backed up all the same'
        $logs = @(Get-ChildItem (Join-Path $Destination '.odakvmbackup-logs') -Filter 'nightly-*.log' | Sort-Object LastWriteTime)
        $logs.Count | Should -BeGreaterThan 0
        $log = Get-Content -Raw $logs[-1].FullName
        $log | Should -Match 'Failed:\s+no_such_vm'
        $log | Should -Match 'no_such_vm \(backup, DomainNotFound\)'
        $log | Should -Match 'Backed up: linux_vm'
        (& stat -c '%a' -- $logs[-1].FullName).Trim() | Should -Be '600'
        (& stat -c '%a' -- (Join-Path $Destination '.odakvmbackup-logs')).Trim() | Should -Be '700'
    }

    It 'exits 2 when it cannot start, and says why' {
        $r = Invoke-Nightly @('-DomainName', 'linux_vm') -Module '/nonexistent/OdaKvmBackup.psd1'
        $r.ExitCode | Should -Be 2
        $r.Output | Should -Match 'could not start'
    }
}
