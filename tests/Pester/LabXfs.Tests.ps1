#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Checks the lab's XFS with reflink (Mount-LabXfs in tests/Lab/OdaKvmLab.psm1): a real file system that clones
# files, with a folder for a local destination and one for the SSH server (tests/Lab/OdaKvmSshLab.psm1), and that
# Dismount-LabXfs (which Remove-Lab runs) takes away. Needs root, xfsprogs (installed with apt) and a free loop device.
# Leaves the lab's XFS mounted, as the tests of incremental backups use it.
#   flock /var/lock/odakvm-lab.lock dotnet pwsh -NoProfile -File ./build.ps1 -Task Pester -PesterPath tests/Pester/LabXfs.Tests.ps1

BeforeAll {
    Set-StrictMode -Version Latest
    $ErrorActionPreference = 'Stop'
    Import-Module (Join-Path $PSScriptRoot '../Lab/OdaKvmLab.psm1') -Force
    Import-Module (Join-Path $PSScriptRoot '../Lab/OdaKvmSshLab.psm1') -Force

    function Invoke-Tool([string] $FilePath, [string[]] $Arguments) {
        $env:LC_ALL = 'C'
        $output = & $FilePath @Arguments 2>&1
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output | ForEach-Object { "$_" }) -join "`n" }
    }
    # Bytes in use on the file system that holds $Path, as df counts them, after its writes reached the disk.
    function Get-UsedBytes([string] $Path) {
        $null = Invoke-Tool sync @('-f', $Path)
        [long]((Invoke-Tool df @('-B1', '--output=used', $Path)).Output -split "`n")[1].Trim()
    }
    function Get-MountOf([string] $Path) { (Invoke-Tool findmnt @('--noheadings', '--output', 'TARGET,FSTYPE,SOURCE', '--target', $Path)).Output.Trim() -split '\s+' }
}

Describe 'The lab XFS with reflink' -Tag 'LabXfs' {
    It 'is an XFS with reflink=1 on a loop device, and mounting it again changes nothing' {
        $first = Mount-LabXfs
        $target, $type, $source = Get-MountOf $first
        $target | Should -Be $first
        $type | Should -Be 'xfs'
        $source | Should -BeLike '/dev/loop*'
        (Invoke-Tool xfs_info @($first)).Output | Should -Match 'reflink=1'
        $marker = Join-Path $first "marker-$([guid]::NewGuid().ToString('N'))"
        [System.IO.File]::WriteAllText($marker, 'kept')

        $again = Mount-LabXfs

        $again | Should -Be $first
        (Get-MountOf $again)[2] | Should -Be $source
        @(& findmnt --noheadings --output TARGET --mountpoint $first).Count | Should -Be 1 -Because 'it is not mounted twice'
        [System.IO.File]::ReadAllText($marker) | Should -Be 'kept'
        Remove-Item -LiteralPath $marker
    }

    It 'gives a local destination folder, 0700, where cp --reflink=always of 64 MiB grows df by far less than 64 MiB' {
        $folder = Get-LabXfsFolder -Name local
        (Get-MountOf $folder)[1] | Should -Be 'xfs'
        (& stat -c '%a' $folder) | Should -Be '700'
        $file = Join-Path $folder "reflink-$([guid]::NewGuid().ToString('N'))"
        try {
            (Invoke-Tool dd @('if=/dev/urandom', "of=$file", 'bs=1M', 'count=64', 'conv=fsync', 'status=none')).ExitCode | Should -Be 0
            $before = Get-UsedBytes $folder

            $r = Invoke-Tool cp @('--reflink=always', $file, "$file.clone")

            $r.ExitCode | Should -Be 0 -Because $r.Output
            $grown = (Get-UsedBytes $folder) - $before
            $grown | Should -BeLessThan 4MB -Because "a clone shares the 64 MiB; df grew by $grown bytes"
            (Invoke-Tool cmp @($file, "$file.clone")).ExitCode | Should -Be 0
            (Invoke-Tool filefrag @('-v', "$file.clone")).Output | Should -Match 'shared'
        }
        finally { Remove-Item -Force -ErrorAction SilentlyContinue -LiteralPath $file, "$file.clone" }
    }

    It 'gives the SSH server a folder on it: over ssh, as root, xfs with reflink=1, and cp --reflink=always works there' {
        $null = Start-LabSshd
        $folder = Get-LabSshXfsFolder
        $file = Join-Path $folder "reflink-$([guid]::NewGuid().ToString('N'))"
        try {
            $ssh = @('-o', 'BatchMode=yes', 'odakvm-backup')
            (Invoke-Tool ssh ($ssh + @('id', '-un'))).Output | Should -Be 'root'
            (Invoke-Tool ssh ($ssh + @('stat', '-f', '-c', '%T', $folder))).Output | Should -Be 'xfs'
            $mountPoint = (Invoke-Tool ssh ($ssh + @('findmnt', '--noheadings', '--output', 'TARGET', '--target', $folder))).Output.Trim()
            $mountPoint | Should -Be (Split-Path -Parent $folder)
            $info = Invoke-Tool ssh ($ssh + @('xfs_info', $mountPoint))
            $info.ExitCode | Should -Be 0 -Because $info.Output
            $info.Output | Should -Match 'reflink=1'
            (Invoke-Tool ssh ($ssh + @('dd', 'if=/dev/urandom', "of=$file", 'bs=1M', 'count=64', 'conv=fsync', 'status=none'))).ExitCode | Should -Be 0
            $before = Get-UsedBytes $folder

            $r = Invoke-Tool ssh ($ssh + @('cp', '--reflink=always', $file, "$file.clone"))

            $r.ExitCode | Should -Be 0 -Because $r.Output
            (Get-UsedBytes $folder) - $before | Should -BeLessThan 4MB
            (Invoke-Tool cmp @($file, "$file.clone")).ExitCode | Should -Be 0
        }
        finally { Remove-Item -Force -ErrorAction SilentlyContinue -LiteralPath $file, "$file.clone" }
    }

    It 'is taken away by Dismount-LabXfs: unmounted, its loop device detached, its image gone (on a lab root of its own)' {
        # A lab root of this test's own, so that the shared lab's XFS stays mounted for whoever uses it.
        $saved = $env:ODAKVM_LAB
        $env:ODAKVM_LAB = Join-Path ([System.IO.Path]::GetTempPath()) "odakvm-labxfs-$([guid]::NewGuid().ToString('N'))"
        try {
            $mountPoint = Mount-LabXfs
            $image = Join-Path $env:ODAKVM_LAB 'xfs.img'
            $device = (Get-MountOf $mountPoint)[2]
            (Invoke-Tool losetup @('--associated', $image)).Output | Should -BeLike "${device}:*"
            [System.IO.File]::WriteAllText((Join-Path (Get-LabXfsFolder -Name local) 'file'), 'data')

            Dismount-LabXfs

            (Invoke-Tool findmnt @('--mountpoint', $mountPoint)).ExitCode | Should -Be 1 -Because 'nothing is mounted there any more'
            (Invoke-Tool losetup @('--list', '--noheadings', '--output', 'NAME,BACK-FILE')).Output | Should -Not -Match ([regex]::Escape($image))
            Test-Path -LiteralPath $image | Should -BeFalse
            Test-Path -LiteralPath $mountPoint | Should -BeFalse
            { Dismount-LabXfs } | Should -Not -Throw -Because 'nothing left is fine'
        }
        finally {
            try { Dismount-LabXfs } catch { Write-Warning $_ }
            Remove-Item -Recurse -Force -ErrorAction SilentlyContinue -LiteralPath $env:ODAKVM_LAB
            $env:ODAKVM_LAB = $saved
        }
    }
}
