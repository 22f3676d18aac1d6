using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Tests;

/// <summary>HungUpTerminal against real pseudo-terminals: one whose other end was closed (as sshd closes it when
/// the SSH connection drops) is pointed at /dev/null; one still open, files and pipes are left alone.</summary>
public sealed partial class HungUpTerminalTests
{
    [Fact]
    public void A_terminal_that_hung_up_is_pointed_at_dev_null_and_a_live_one_is_left_alone()
    {
        using var dead = Pty.Open();
        using var live = Pty.Open();
        using var file = File.OpenHandle(Path.GetTempFileName(), FileMode.Open, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        dead.CloseMaster(); // the far end is gone: the terminal hangs up

        Assert.True(HungUpTerminal.IsHungUp(dead.Fd));
        Assert.False(HungUpTerminal.IsHungUp(live.Fd));
        Assert.False(HungUpTerminal.IsHungUp((int)file.DangerousGetHandle()));

        HungUpTerminal.Detach();

        Assert.Equal("/dev/null", Target(dead.Fd));
        Assert.StartsWith("/dev/pts/", Target(live.Fd), StringComparison.Ordinal);
        Assert.EndsWith(".tmp", Target((int)file.DangerousGetHandle()), StringComparison.Ordinal);
        Assert.True(HungUpTerminal.Gone);
    }

    private static string Target(int fd) => new FileInfo($"/proc/self/fd/{fd}").LinkTarget!;

    /// <summary>A pseudo-terminal pair: the master (the side sshd holds) and the slave (the session's terminal).</summary>
    private sealed partial class Pty : IDisposable
    {
        private SafeFileHandle? _master;
        private readonly SafeFileHandle _slave;

        private Pty(SafeFileHandle master, SafeFileHandle slave)
        {
            _master = master;
            _slave = slave;
        }

        public int Fd => (int)_slave.DangerousGetHandle();

        public static Pty Open()
        {
            var master = File.OpenHandle("/dev/ptmx", FileMode.Open, FileAccess.ReadWrite);
            var fd = (int)master.DangerousGetHandle();
            Assert.Equal(0, UnlockPt(fd));
            var name = new byte[64];
            Assert.Equal(0, PtsNameR(fd, name, name.Length));
            var path = System.Text.Encoding.ASCII.GetString(name, 0, Array.IndexOf(name, (byte)0));
            return new Pty(master, File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite));
        }

        public void CloseMaster()
        {
            _master?.Dispose();
            _master = null;
        }

        public void Dispose()
        {
            _slave.Dispose();
            _master?.Dispose();
        }

        [LibraryImport("libc", EntryPoint = "unlockpt")]
        private static partial int UnlockPt(int fd);

        [LibraryImport("libc", EntryPoint = "ptsname_r")]
        private static partial int PtsNameR(int fd, [Out] byte[] buffer, nint length);
    }
}
